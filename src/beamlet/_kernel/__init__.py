"""beamlet._kernel"""
