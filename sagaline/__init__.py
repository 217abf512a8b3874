"""Sagaline: saga orchestration on Celery.

Each step of a saga is a Celery task; the forward path is a Celery chain; when a step fails
for good, the completed steps are undone in reverse by their compensations, each a Celery
task too; Redis records every transition.
"""

from . import telemetry
from .context import StepContext
from .embedded import EmbeddedRedis, EmbeddedRedisError
from .engine import SagaHandle, Sagaline
from .errors import (
    ConfigurationError,
    DeadlineExceededError,
    DefinitionError,
    EnqueueError,
    InjectedFaultError,
    InvalidCorrelationIdError,
    InvalidInputError,
    NonRetryableError,
    RecoveryExhaustedError,
    SagaCancelledError,
    SagaError,
    SagaNotFoundError,
    StateError,
    StepError,
    StepTimeoutError,
    UnknownSagaError,
    WaitTimeoutError,
)
from .ids import new_id
from .policy import DEFAULT_COMPENSATION_RETRY, DEFAULT_RETRY, NO_RETRY, RetryPolicy
from .record import DeadLetter, ErrorInfo, OperationRun, SagaRun, StepRun, Transition
from .refs import Const, FromInput, FromStep
from .registry import SagaRegistry
from .saga import Saga
from .status import Role, SagaStatus, StepStatus
from .step import Step
from .store import RedisStore
from .supervisor import StuckSaga, Supervisor
from .task import SagaTask, saga_task

__all__ = [
    # declaring
    "Const",
    "FromInput",
    "FromStep",
    "RetryPolicy",
    "DEFAULT_RETRY",
    "DEFAULT_COMPENSATION_RETRY",
    "NO_RETRY",
    "Saga",
    "SagaTask",
    "Step",
    "StepContext",
    "saga_task",
    # running
    "EmbeddedRedis",
    "RedisStore",
    "SagaHandle",
    "SagaRegistry",
    "Sagaline",
    "StuckSaga",
    "Supervisor",
    "new_id",
    # outcomes
    "DeadLetter",
    "ErrorInfo",
    "OperationRun",
    "Role",
    "SagaRun",
    "SagaStatus",
    "StepRun",
    "StepStatus",
    "Transition",
    # observing
    "telemetry",
    # errors
    "ConfigurationError",
    "DeadlineExceededError",
    "DefinitionError",
    "EmbeddedRedisError",
    "EnqueueError",
    "InjectedFaultError",
    "InvalidCorrelationIdError",
    "InvalidInputError",
    "NonRetryableError",
    "RecoveryExhaustedError",
    "SagaCancelledError",
    "SagaError",
    "SagaNotFoundError",
    "StateError",
    "StepError",
    "StepTimeoutError",
    "UnknownSagaError",
    "WaitTimeoutError",
]
