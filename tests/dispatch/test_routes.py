"""Routes: the seed's defaults, register/remove/get, and NoRouteError before any I/O."""

from __future__ import annotations

import pytest

from meetq import NoRouteError, ServiceRoute, TaskDispatcher, TaskRequest, TaskType
from meetq.dispatch.routes import RouteTable
from meetq.dispatch.types import queue_of


def test_default_routes_are_the_seeds() -> None:
    table = RouteTable()
    by_service = {r.service_name: r for r in table.routes()}
    assert by_service["ai-service"].queue_name == "ai_tasks"
    assert set(by_service["ai-service"].task_types) == {
        "speech_recognition",
        "emotion_detection",
        "synthesis_detection",
        "audio_denoising",
        "video_enhancement",
        "text_to_speech",
    }
    assert by_service["media-service"].task_types == [
        "media_processing",
        "stream_control",
        "recording",
    ]
    assert by_service["meeting-service"].queue_name == "meeting_tasks"
    assert by_service["signaling-service"].task_types == ["signaling", "webrtc_negotiation"]
    assert table.route_for(TaskType.RECORDING).queue_name == "media_tasks"
    assert TaskType.SPEECH_RECOGNITION == "speech_recognition"


def test_register_replace_and_remove() -> None:
    table = RouteTable()
    table.register(ServiceRoute("custom-service", "custom_tasks", ["custom_a"]))
    assert table.route_for("custom_a").queue_name == "custom_tasks"
    # same service name replaces; a type named by a later route moves to it
    table.register(ServiceRoute("custom-service", "custom2", ["custom_a", "recording"]))
    assert table.route_for("custom_a").queue_name == "custom2"
    assert table.route_for("recording").queue_name == "custom2"
    assert table.remove("custom-service")
    assert not table.remove("custom-service")
    with pytest.raises(NoRouteError):
        table.route_for("custom_a")
    assert table.route_for("recording").queue_name == "media_tasks"


def test_routes_returned_are_copies() -> None:
    table = RouteTable()
    table.routes()[0].task_types.append("sneaky")
    with pytest.raises(NoRouteError):
        table.route_for("sneaky")


def test_bad_queue_names_are_refused() -> None:
    for bad in ("", "a{b}", "x@y"):
        with pytest.raises(ValueError):
            ServiceRoute("s", bad, ["t"])


def test_task_ids_name_their_queue() -> None:
    assert queue_of("abc@ai_tasks") == "ai_tasks"
    assert queue_of("abc") is None
    assert queue_of("abc@") is None


async def test_no_route_is_refused_and_publishes_nothing(redis_url: str) -> None:
    async with TaskDispatcher(redis_url) as d:
        with pytest.raises(NoRouteError):
            await d.dispatch(TaskRequest(type="nobody_handles_this"))
        with pytest.raises(NoRouteError):
            await d.dispatch_batch(
                [TaskRequest(type=TaskType.RECORDING), TaskRequest(type="nobody")]
            )
        assert d.get_stats()["total_dispatched"] == 0
        assert d.get_stats()["active_tasks"] == 0
        d.register_route(ServiceRoute("x", "x_tasks", ["nobody"]))
        assert [r.service_name for r in d.get_routes()][-1] == "x"
        assert d.remove_route("x")
