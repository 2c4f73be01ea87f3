"""beamlet: the BEAM's process model for Python."""

from beamlet.terms import Atom, Pid, Ref

__all__ = ["Atom", "Pid", "Ref"]
