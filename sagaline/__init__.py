"""Sagaline: saga orchestration on Celery.

Each step of a saga is a Celery task; the forward path is a Celery chain; when a step fails
for good, the completed steps are undone in reverse by their compensations, each a Celery
task too; Redis records every transition.
"""

from sagaline import telemetry
from sagaline.child import SubSaga
from sagaline.choreography import ChoreographySaga, Reaction
from sagaline.context import StepContext
from sagaline.domains import Domains
from sagaline.dynamic import SagaBuilder, add_steps
from sagaline.engine import SagaHandle, Sagaline
from sagaline.errors import (
    AttemptsLostError,
    ConfigurationError,
    DeadlineExceededError,
    DefinitionError,
    EnqueueError,
    EventError,
    IdempotencyConflictError,
    InjectedFaultError,
    InvalidCorrelationIdError,
    InvalidEventError,
    InvalidInputError,
    InvalidSignalError,
    NonRetryableError,
    PublishError,
    RecoveryExhaustedError,
    ResultError,
    SagaCancelledError,
    SagaError,
    SagaNotFoundError,
    SagasDisabledError,
    SignalTimeoutError,
    StateError,
    StepError,
    StepTimeoutError,
    TaxonomyError,
    UnknownSagaError,
    WaitTimeoutError,
)
from sagaline.events import Event, EventBus, EventType, Subscription, Taxonomy, subscriber
from sagaline.ids import new_id
from sagaline.naming import event_name
from sagaline.outcome import (
    DeadLetter,
    ErrorInfo,
    OperationRun,
    Progress,
    SagaRun,
    SignalReceipt,
    StepRun,
    Transition,
)
from sagaline.parallel import Parallel
from sagaline.policy import DEFAULT_COMPENSATION_RETRY, DEFAULT_RETRY, NO_RETRY, RetryPolicy
from sagaline.refs import Const, FromInput, FromStep, Ref
from sagaline.registry import SagaRegistry
from sagaline.runtime import StuckSaga, Supervisor
from sagaline.saga import Saga
from sagaline.schedules import Schedule
from sagaline.status import Role, SagaStatus, StepStatus
from sagaline.step import Fallback, Step
from sagaline.store import EmbeddedRedis, EmbeddedRedisError, RedisStore
from sagaline.task import SagaTask, saga_task

__all__ = [
    # declaring
    "Const",
    "FromInput",
    "FromStep",
    "Ref",
    "RetryPolicy",
    "DEFAULT_RETRY",
    "DEFAULT_COMPENSATION_RETRY",
    "NO_RETRY",
    "Domains",
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
    "ChoreographySaga",
    "Reaction",
    # running
    "EmbeddedRedis",
    "RedisStore",
    "SagaHandle",
    "SagaRegistry",
    "Sagaline",
    "Schedule",
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
    "Progress",
    "Role",
    "SagaRun",
    "SagaStatus",
    "SignalReceipt",
    "StepRun",
    "StepStatus",
    "Transition",
    # observing
    "telemetry",
    # errors
    "AttemptsLostError",
    "ConfigurationError",
    "DeadlineExceededError",
    "DefinitionError",
    "EmbeddedRedisError",
    "EnqueueError",
    "EventError",
    "IdempotencyConflictError",
    "InjectedFaultError",
    "InvalidEventError",
    "InvalidCorrelationIdError",
    "InvalidInputError",
    "InvalidSignalError",
    "NonRetryableError",
    "PublishError",
    "RecoveryExhaustedError",
    "ResultError",
    "SagaCancelledError",
    "SagaError",
    "SagaNotFoundError",
    "SagasDisabledError",
    "SignalTimeoutError",
    "StateError",
    "StepError",
    "StepTimeoutError",
    "TaxonomyError",
    "UnknownSagaError",
    "WaitTimeoutError",
]
