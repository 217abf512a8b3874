"""Sagaline: saga orchestration on Celery.

Each step of a saga is a Celery task; the forward path is a Celery chain; when a step fails
for good, the completed steps are undone in reverse by their compensations, each a Celery
task too; Redis records every transition.
"""

from . import telemetry
from .bus import EventBus, Subscription, subscriber
from .child import SubSaga
from .context import StepContext
from .dynamic import SagaBuilder, add_steps
from .embedded import EmbeddedRedis, EmbeddedRedisError
from .engine import SagaHandle, Sagaline
from .errors import (
    ConfigurationError,
    DeadlineExceededError,
    DefinitionError,
    EnqueueError,
    EventError,
    InjectedFaultError,
    InvalidCorrelationIdError,
    InvalidEventError,
    InvalidInputError,
    NonRetryableError,
    PublishError,
    RecoveryExhaustedError,
    SagaCancelledError,
    SagaError,
    SagaNotFoundError,
    SagasDisabledError,
    StateError,
    StepError,
    StepTimeoutError,
    TaxonomyError,
    UnknownSagaError,
    WaitTimeoutError,
)
from .events import Event, event_name
from .ids import new_id
from .parallel import Parallel
from .policy import DEFAULT_COMPENSATION_RETRY, DEFAULT_RETRY, NO_RETRY, RetryPolicy
from .record import DeadLetter, ErrorInfo, OperationRun, SagaRun, StepRun, Transition
from .refs import Const, FromInput, FromStep
from .registry import SagaRegistry
from .saga import Saga
from .status import Role, SagaStatus, StepStatus
from .step import Fallback, Step
from .store import RedisStore
from .supervisor import StuckSaga, Supervisor
from .task import SagaTask, saga_task
from .taxonomy import EventType, Taxonomy

__all__ = [
    # declaring
    "Const",
    "FromInput",
    "FromStep",
    "RetryPolicy",
    "DEFAULT_RETRY",
    "DEFAULT_COMPENSATION_RETRY",
    "NO_RETRY",
    "Fallback",
    "Parallel",
    "Saga",
    "SagaBuilder",
    "SagaTask",
    "add_steps",
    "Step",
    "StepContext",
    "SubSaga",
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
    # events
    "Event",
    "EventBus",
    "EventType",
    "Subscription",
    "Taxonomy",
    "event_name",
    "subscriber",
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
    "EventError",
    "InjectedFaultError",
    "InvalidEventError",
    "InvalidCorrelationIdError",
    "InvalidInputError",
    "NonRetryableError",
    "PublishError",
    "RecoveryExhaustedError",
    "SagaCancelledError",
    "SagaError",
    "SagaNotFoundError",
    "SagasDisabledError",
    "StateError",
    "StepError",
    "StepTimeoutError",
    "TaxonomyError",
    "UnknownSagaError",
    "WaitTimeoutError",
]
