"""The public API: what ``sagaline`` exports is deliberate, and pinned here."""

import sagaline

EXPECTED = {
    "Const", "FromInput", "FromStep", "RetryPolicy", "DEFAULT_RETRY",
    "DEFAULT_COMPENSATION_RETRY", "NO_RETRY", "Saga", "SagaTask", "Step", "StepContext",
    "saga_task", "EmbeddedRedis", "RedisStore", "SagaHandle", "SagaRegistry", "Sagaline",
    "new_id", "ErrorInfo", "OperationRun", "Role", "SagaRun", "SagaStatus", "StepRun",
    "StepStatus", "Transition", "ConfigurationError", "DefinitionError", "EmbeddedRedisError",
    "EnqueueError", "InjectedFaultError", "InvalidCorrelationIdError", "InvalidInputError",
    "NonRetryableError", "SagaError", "SagaNotFoundError", "StateError", "StepError",
    "StepTimeoutError", "UnknownSagaError", "WaitTimeoutError", "StuckSaga", "Supervisor",
    "DeadLetter", "DeadlineExceededError", "RecoveryExhaustedError", "SagaCancelledError",
    # events
    "Event", "EventBus", "EventType", "Subscription", "Taxonomy", "event_name", "subscriber",
    "EventError", "InvalidEventError", "PublishError", "SagasDisabledError", "TaxonomyError",
    "Fallback", "Parallel", "SubSaga", "SagaBuilder", "add_steps",
    "telemetry",
}


def test_exports_are_exactly_the_public_api() -> None:
    assert set(sagaline.__all__) == EXPECTED
    assert all(hasattr(sagaline, name) for name in sagaline.__all__)


def test_every_error_is_a_saga_error() -> None:
    errors = [getattr(sagaline, n) for n in sagaline.__all__ if n.endswith("Error")]
    assert all(issubclass(e, sagaline.SagaError) for e in errors)
