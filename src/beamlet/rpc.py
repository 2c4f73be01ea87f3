"""Remote procedure calls between beamlet and Erlang nodes.

``expose(module, function, fn)`` lets Erlang call ``fn`` with
``rpc:call(PyNode, module, function, Args)``; nothing else can be called (an
Erlang cookie means "may run any code"; a beamlet node is safer by default).
``await call(node, module, function, args)`` calls a function on an Erlang node.
"""

from beamlet.distribution.services import expose, exposed, unexpose
from beamlet.distribution.services import rpc_call as call

__all__ = ["call", "expose", "exposed", "unexpose"]
