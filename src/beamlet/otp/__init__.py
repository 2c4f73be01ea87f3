"""OTP behaviours on beamlet's kernel: GenServer, Supervisor, DynamicSupervisor,
Task, Agent. Built only on the public ``beamlet`` API; guides in docs/otp/."""

from beamlet.otp.agent import Agent
from beamlet.otp.dynamic_supervisor import DynamicSupervisor
from beamlet.otp.errors import CallError, CallTimeout, ChildRunning, ServerExit, StartError
from beamlet.otp.gen import call, cast, reply
from beamlet.otp.gen_server import GenServer, NoReply, Stop, get_state, replace_state, stop
from beamlet.otp.supervisor import (
    ChildSpec,
    Supervisor,
    count_children,
    delete_child,
    restart_child,
    start_child,
    terminate_child,
    which_children,
)
from beamlet.otp.task import Task, TaskError, TaskSupervisor

__all__ = [
    "Agent",
    "CallError",
    "CallTimeout",
    "ChildRunning",
    "ChildSpec",
    "DynamicSupervisor",
    "GenServer",
    "NoReply",
    "ServerExit",
    "StartError",
    "Stop",
    "Supervisor",
    "Task",
    "TaskError",
    "TaskSupervisor",
    "call",
    "cast",
    "count_children",
    "delete_child",
    "get_state",
    "replace_state",
    "reply",
    "restart_child",
    "start_child",
    "stop",
    "terminate_child",
    "which_children",
]
