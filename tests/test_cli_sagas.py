"""``sagaline sagas``: every registered saga, and one saga's steps, compensations, policies."""

from __future__ import annotations

import json

from tests.test_cli import ORDER_STEPS, sagaline


def test_sagas_lists_every_registered_saga_with_its_step_count() -> None:
    """Without a name, the command lists each saga with its description and steps."""
    result = sagaline("sagas")

    assert result.returncode == 0, result.stderr
    lines = {line.split()[1]: line for line in result.stdout.splitlines()
             if line.startswith("│")}
    assert "5" in lines["order_processing"].split("│")[2]
    assert "Create an order" in lines["order_processing"]
    assert "3" in lines["travel_booking"].split("│")[2]
    assert "t_undo_fails" in lines


def test_sagas_json_lists_names_descriptions_and_steps() -> None:
    result = sagaline("sagas", "--json")

    assert result.returncode == 0, result.stderr
    listed = {s["name"]: s for s in json.loads(result.stdout)}
    assert listed["order_processing"]["steps"] == ORDER_STEPS
    assert listed["order_processing"]["inputs"] == "OrderInput"
    assert listed["travel_booking"]["steps"] == ["book_flight", "book_hotel", "rent_car"]
    assert list(listed) == sorted(listed)


def test_sagas_name_json_shows_each_step_with_its_compensation_and_policies() -> None:
    """``sagas NAME --json``: the steps in order with tasks, argument sources, the retry
    policies that apply (the step's own or the saga's default), time limit and queue.
    """
    result = sagaline("sagas", "order_processing", "--json")

    assert result.returncode == 0, result.stderr
    saga = json.loads(result.stdout)
    assert saga["name"] == "order_processing"
    assert [s["name"] for s in saga["steps"]] == ORDER_STEPS
    create, reserve = saga["steps"][0], saga["steps"][1]
    assert (create["action"], create["compensation"]) == ("orders.create_order",
                                                          "orders.cancel_order")
    assert create["args"]["items"] == "FromInput('items')"
    assert create["compensation_args"] == {"order_id": "FromStep('create_order', 'order_id')"}
    assert (create["retry"]["attempts"], create["retry"]["initial_s"],
            create["retry"]["source"]) == (3, 0.2, "step")
    assert (create["compensation_retry"]["attempts"],
            create["compensation_retry"]["source"]) == (5, "saga")
    assert create["time_limit_s"] == 10.0
    assert create["queue"] is None
    assert reserve["retry"]["attempts"] == 1
    assert saga["steps"][-1]["compensation"] is None
    assert saga["steps"][-1]["compensation_retry"] is None
    assert saga["returns"]["payment_id"] == "FromStep('process_payment', 'payment_id')"


def test_sagas_name_shows_the_steps_in_a_table() -> None:
    """Without --json, one saga's facts and a table of its steps, in order."""
    result = sagaline("sagas", "travel_booking")

    out = result.stdout
    assert result.returncode == 0, result.stderr
    assert "TravelInput (traveler, flight_id, hotel_id, car_id)" in out
    tasks = ["travel.book_flight", "travel.cancel_flight", "travel.book_hotel",
             "travel.cancel_hotel", "travel.rent_car", "travel.cancel_car"]
    positions = [out.find(t) for t in tasks]
    assert -1 not in positions and positions == sorted(positions), out
    assert "car_id ← FromInput('car_id')" in out
    assert "no retry" in out and "undo: 5 attempts (1 s x2, max 300 s) (saga default)" in out
    assert "30 s" in out


def test_sagas_with_an_unknown_name_exits_2_listing_the_known_ones() -> None:
    result = sagaline("sagas", "no_such_saga")

    assert result.returncode == 2
    assert "no_such_saga" in result.stderr
    assert "order_processing" in result.stderr and "travel_booking" in result.stderr
    assert result.stdout == ""


def test_help_lists_the_sagas_command() -> None:
    result = sagaline("--help")
    assert result.returncode == 0
    assert "sagas" in result.stdout


def test_sagas_lists_and_shows_a_choreography_with_its_reactions() -> None:
    """A choreographed saga is discoverable too: its trigger, reactions and their undo."""
    listed = {s["name"]: s for s in json.loads(sagaline("sagas", "--json").stdout)}
    assert listed["order_choreography"]["kind"] == "choreography"
    assert listed["order_choreography"]["steps"] == ["create_order", "reserve_inventory",
                                                     "process_payment"]
    result = sagaline("sagas", "order_choreography", "--json")
    assert result.returncode == 0, result.stderr
    about = json.loads(result.stdout)
    assert about["starts_with"] == "checkout.order.placed"
    assert [(r["on"], r["run"], r["undo"]) for r in about["reactions"]] == [
        ("checkout.order.placed", "orders.create_order", "orders.cancel_order"),
        ("checkout.order.accepted", "inventory.reserve_inventory",
         "inventory.release_inventory"),
        ("checkout.stock.reserved", "payments.process_payment", "payments.refund_payment"),
    ]
    table = sagaline("sagas", "order_choreography")
    assert table.returncode == 0, table.stderr
    assert "checkout.payment.declined" in table.stdout


def test_sagas_name_shows_a_fallback_by_its_tasks_and_policy_never_a_repr() -> None:
    """``process_payment`` falls back on a backup card: shown by task names and policies in
    words, in the table and in --json, without any Python repr (no function addresses).
    """
    table = sagaline("sagas", "order_processing")
    as_json = sagaline("sagas", "order_processing", "--json")

    assert table.returncode == 0, table.stderr
    assert as_json.returncode == 0, as_json.stderr
    for output in (table.stdout, as_json.stdout):
        assert "0x" not in output and "<function" not in output
        assert "Fallback(" not in output and "SagaTask(" not in output
    assert "fallback: payments.charge_backup_card" in table.stdout
    assert "fallback: payments.refund_backup_card" in table.stdout
    assert "fallback: no retry" in table.stdout
    payment = next(s for s in json.loads(as_json.stdout)["steps"]
                   if s["name"] == "process_payment")
    fallback = payment["fallback"]
    assert (fallback["action"], fallback["compensation"]) == (
        "payments.charge_backup_card", "payments.refund_backup_card")
    assert fallback["args"]["amount"] == "FromInput('total_amount')"
    assert (fallback["retry"]["attempts"], fallback["retry"]["source"]) == (1, "step")
    assert fallback["compensation_retry"]["source"] == "saga"
    assert "fallback" not in payment["extra"]


def test_sagas_name_shows_a_parallel_groups_branches_as_running_at_once() -> None:
    """``book_stay`` runs ``book_hotel`` and ``rent_car`` at once: the table has a row for
    the group and marks its branches; --json gives each step its group, and the groups.
    """
    table = sagaline("sagas", "travel_booking")
    as_json = sagaline("sagas", "travel_booking", "--json")

    assert table.returncode == 0, table.stderr
    rows = [[cell.strip() for cell in line.split("│")[1:-1]]
            for line in table.stdout.splitlines() if line.startswith("│")]
    numbered = [(row[0], row[1]) for row in rows if row[0]]
    assert numbered == [("1", "book_flight"), ("2", "book_stay (parallel group)"),
                        ("2.1", "∥ book_hotel"), ("2.2", "∥ rent_car")]
    assert table.stdout.count("in group book_stay") == 2
    assert "runs at once: book_hotel, rent_car" in table.stdout
    assert "at most 2 at a time" in table.stdout
    saga = json.loads(as_json.stdout)
    assert [(s["name"], s["group"]) for s in saga["steps"]] == [
        ("book_flight", None), ("book_hotel", "book_stay"), ("rent_car", "book_stay")]
    assert saga["groups"] == [{"name": "book_stay", "branches": ["book_hotel", "rent_car"],
                               "max_concurrency": 2}]
