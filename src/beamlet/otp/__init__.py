"""beamlet.otp"""
