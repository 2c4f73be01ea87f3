"""beamlet.testing"""
