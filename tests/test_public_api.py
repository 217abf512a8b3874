"""The public API: what ``sagaline`` exports is deliberate, and pinned here."""

import importlib

import sagaline

EXPECTED = {
    "Const", "FromInput", "FromStep", "RetryPolicy", "DEFAULT_RETRY",
    "DEFAULT_COMPENSATION_RETRY", "NO_RETRY", "Saga", "SagaTask", "Step", "StepContext",
    "saga_task", "EmbeddedRedis", "RedisStore", "SagaHandle", "SagaRegistry", "Sagaline",
    "new_id", "ErrorInfo", "OperationRun", "Progress", "Role", "SagaRun", "SagaStatus", "StepRun",
    "StepStatus", "Transition", "ConfigurationError", "DefinitionError", "EmbeddedRedisError",
    "EnqueueError", "InjectedFaultError", "InvalidCorrelationIdError", "InvalidInputError",
    "NonRetryableError", "SagaError", "SagaNotFoundError", "StateError", "StepError",
    "StepTimeoutError", "UnknownSagaError", "WaitTimeoutError", "StuckSaga", "Supervisor",
    "DeadLetter", "DeadlineExceededError", "RecoveryExhaustedError", "SagaCancelledError",
    "ResultError", "AttemptsLostError",
    # sagas on a schedule
    "Schedule",
    # events
    "Event", "EventBus", "EventType", "Subscription", "Taxonomy", "event_name", "subscriber",
    "EventError", "InvalidEventError", "PublishError", "SagasDisabledError", "TaxonomyError",
    "IdempotencyConflictError",
    # signals
    "SignalReceipt", "SignalTimeoutError", "InvalidSignalError",
    "Fallback", "Parallel", "SubSaga", "SagaBuilder", "add_steps",
    "Domains",
    "telemetry",
    # used by the app's own sagas, so public: choreography and references
    "ChoreographySaga", "Reaction", "Ref",
}

#: The faces of the engine's families: what each folder's ``__init__`` promises.
FACES = {
    "sagaline.store": {"Claim", "EmbeddedRedis", "EmbeddedRedisError", "GroupSpec",
                       "OutboxClaim", "RedisStore", "Rollback"},
    "sagaline.events": {"Event", "EventBus", "EventType", "Outbox", "Subscription", "Taxonomy",
                        "derived_id", "event_name", "name_problems", "subscriber"},
    "sagaline.runtime": {"NestedSagas", "Delivery", "Driver", "Envelope", "RetryIn", "Runtime",
                         "Signals", "Skip", "StuckSaga", "Supervisor", "Transport"},
    "sagaline.choreography": {"ChoreographySaga", "Reaction"},
    "sagaline.testing": {"Attempt", "InProcessWorker", "RunReport", "SagaTestHarness",
                         "attempts_in", "named_queues", "worker_for"},
    "sagaline.cli": {"main"},
    "sagaline.api": {"TokenSet", "create_app"},
}

#: What the facade offers; the engine's moves live in ``sagaline.runtime``, not on it.
FACADE_METHODS = {"start", "get", "wait", "list", "cancel", "signal", "register",
                  "register_tasks"}


def test_exports_are_exactly_the_public_api() -> None:
    assert set(sagaline.__all__) == EXPECTED
    assert all(hasattr(sagaline, name) for name in sagaline.__all__)


def test_every_error_is_a_saga_error() -> None:
    errors = [getattr(sagaline, n) for n in sagaline.__all__ if n.endswith("Error")]
    assert all(issubclass(e, sagaline.SagaError) for e in errors)


def test_each_family_folder_exports_exactly_its_face() -> None:
    for module, names in FACES.items():
        face = importlib.import_module(module)
        assert set(face.__all__) == names, module
        assert all(hasattr(face, name) for name in face.__all__), module


def test_the_facade_offers_only_what_callers_use() -> None:
    public = {name for name, value in vars(sagaline.Sagaline).items()
              if callable(value) and not name.startswith("_")}
    assert public == FACADE_METHODS
