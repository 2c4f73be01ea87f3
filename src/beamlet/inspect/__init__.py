"""beamlet.inspect"""
