"""Compatibility shims that let moto's server run deploy/aws/deploy.sh end to end.

moto emulates the AWS APIs the deploy calls (CloudFormation, EC2, ELBv2, IAM, ECR, ECS, SSM, STS),
but a few ECS behaviours differ from AWS in ways that stop the script. Each shim below names the
gap; they are written against one moto release and refuse any other, so an upgrade makes someone
re-check each one (and delete those moto fixed) instead of silently testing a different emulator.

`install(ready_address)` patches the in-process moto (the test runs ThreadedMotoServer in this
process) and returns an undo function.
"""

from __future__ import annotations

from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import moto
from moto.ecs.models import EC2ContainerServiceBackend
from moto.elbv2.models import ELBv2Backend
from moto.moto_api import state_manager

MOTO_VERSION = "5.2.5"
assert moto.__version__ == MOTO_VERSION, (
    f"tests/moto_shims.py is written for moto {MOTO_VERSION}, not {moto.__version__}: "
    "re-check each shim against the new release, then update MOTO_VERSION and the dev pin"
)


def install(ready_address: str) -> Callable[[], None]:
    """Patch moto; `ready_address` (host:port) stands in for the load balancer's DNS name."""
    undo: list[Callable[[], None]] = []

    def patch(owner: Any, name: str, replacement: Any) -> None:
        original = getattr(owner, name)
        setattr(owner, name, replacement)
        undo.append(lambda: setattr(owner, name, original))

    # Shim 1, Fargate run-task: moto sums each container's `memory` to place the task and gets
    # None (HTTP 500) for a Fargate task definition that sets memory at the task level only,
    # which is what AWS requires of Fargate and what deploy/aws/task-definition.json does.
    # Containers without their own memory get the task's.
    calculate = EC2ContainerServiceBackend._calculate_task_resource_requirements

    def calculate_with_task_memory(task_definition: Any) -> dict[str, Any]:
        keys = ("memory", "memoryReservation", "Memory", "MemoryReservation")
        containers = [
            c if any(k in c for k in keys) else {**c, "memory": int(task_definition.memory or 0)}
            for c in task_definition.container_definitions
        ]  # a copy: describe-task-definition still shows what was registered
        return calculate(SimpleNamespace(container_definitions=containers))

    patch(EC2ContainerServiceBackend, "_calculate_task_resource_requirements", staticmethod(calculate_with_task_memory))

    # Shim 2, tasks reach STOPPED at once: moto's tasks advance PENDING -> RUNNING -> STOPPED one
    # step per describe, so `aws ecs wait tasks-stopped` (a 6 s poll) would take three polls.
    # moto's own state manager makes the progression immediate. (moto reports exit code 0 for
    # every container, which is why the failure paths stay on the recording CLI.)
    state_manager.set_transition(model_name="ecs::task", transition={"progression": "immediate"})
    undo.append(lambda: state_manager.unset_transition(model_name="ecs::task"))

    # Shim 3, services converge: moto never starts a service's tasks (runningCount stays 0, so
    # `aws ecs wait services-stable` times out after 10 minutes), and update-service changes the
    # service's task definition but not its PRIMARY deployment's, which the script reads to detect
    # a circuit-breaker rollback. Described services are made what AWS shows after a successful
    # rollout: one PRIMARY deployment of the current task definition, COMPLETED, all tasks running.
    describe = EC2ContainerServiceBackend.describe_services

    def describe_converged(self: Any, cluster_str: str, names: list[str]) -> Any:
        services, failures = describe(self, cluster_str, names)
        for service in services:
            service.running_count, service.pending_count = service.desired_count, 0
            if service.deployments:
                primary = service.deployments[0]
                primary.update(
                    taskDefinition=service.task_definition,
                    rolloutState="COMPLETED",
                    runningCount=service.desired_count,
                    pendingCount=0,
                    desiredCount=service.desired_count,
                )
                service.deployments[:] = [primary]
        return services, failures

    patch(EC2ContainerServiceBackend, "describe_services", describe_converged)

    # Shim 4, the load balancer: moto gives the ALB a DNS name under elb.amazonaws.com that
    # resolves nowhere, and the script checks the ready path through it after the services are
    # stable. The DNS name (and so the stack's LoadBalancerUrl output) becomes a local server.
    create_lb = ELBv2Backend.create_load_balancer

    def create_local_lb(self: Any, *args: Any, **kwargs: Any) -> Any:
        balancer = create_lb(self, *args, **kwargs)
        balancer.dns_name = ready_address
        return balancer

    patch(ELBv2Backend, "create_load_balancer", create_local_lb)

    def uninstall() -> None:
        while undo:
            undo.pop()()

    return uninstall
