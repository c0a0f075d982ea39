"""`flows.prefect_api.PrefectAPI`: the temporary Prefect API of `iconicity run`, a real
server on loopback (Prefect's own application under uvicorn), started and stopped here."""

from __future__ import annotations

import urllib.request

import pytest

pytest.importorskip("prefect")

from flows.prefect_api import PrefectAPI  # noqa: E402


@pytest.fixture
def no_configured_api(monkeypatch):
    """No PREFECT_API_URL in the environment, and Prefect's settings read again after the test."""
    from prefect.context import refresh_global_settings_context

    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    refresh_global_settings_context()
    yield monkeypatch
    monkeypatch.undo()
    refresh_global_settings_context()


def test_a_temporary_api_runs_the_flows_then_stops(no_configured_api, tmp_path):
    from prefect import flow, task
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
    from prefect.settings import PREFECT_API_URL, Settings, get_current_settings

    @task
    def double(x: int) -> int:
        return 2 * x

    @flow(name="prefect-api-test")
    def doubled(n: int) -> list[int]:
        return [double.submit(i).result() for i in range(n)]

    @flow(name="prefect-api-heartbeat")
    def heartbeat_frequency() -> int | None:
        return get_current_settings().flows.heartbeat_frequency

    api = PrefectAPI(log_file=tmp_path / "prefect-api.log")
    api.start_in_background()
    url = api.ready()
    try:
        assert url.startswith("http://127.0.0.1:") and url.endswith("/api")
        assert api.process is not None and api.process.poll() is None
        assert PREFECT_API_URL.value() == url  # this process's Prefect now talks to it
        state = doubled(3, return_state=True)
        assert state.result() == [0, 2, 4]
        # its flows run without heartbeats (nothing on a temporary server reads them); outside
        # `flow_settings`, Prefect's own settings
        with api.flow_settings():
            assert heartbeat_frequency() is None
        assert get_current_settings().flows.heartbeat_frequency == Settings().flows.heartbeat_frequency > 0
        with get_client(sync_client=True) as client:
            assert str(client.api_url).rstrip("/") == url
            run = client.read_flow_run(state.state_details.flow_run_id)
            assert run.state.is_completed()  # the flow run is recorded
            # its task runs are not: the recorder is off on a temporary API (SERVICES_OFF)
            ids = FlowRunFilter(id=FlowRunFilterId(any_=[run.id]))
            assert client.read_task_runs(flow_run_filter=ids) == []
    finally:
        process = api.process
        api.close()
    assert process.poll() is not None  # stopped
    assert PREFECT_API_URL.value() is None  # and the settings are as they were
    with pytest.raises(OSError):
        urllib.request.urlopen(f"{url}/health", timeout=2)


def test_a_configured_api_is_used_and_nothing_is_started(no_configured_api, tmp_path):
    from prefect.context import refresh_global_settings_context
    from prefect.settings import Settings, get_current_settings

    no_configured_api.setenv("PREFECT_API_URL", "http://127.0.0.1:9/api")
    refresh_global_settings_context()
    api = PrefectAPI(log_file=tmp_path / "prefect-api.log")
    api.start_in_background()
    assert api.ready() == "http://127.0.0.1:9/api"
    assert api.process is None and not (tmp_path / "prefect-api.log").exists()
    with api.flow_settings():  # a configured server's flows keep Prefect's settings
        assert get_current_settings().flows.heartbeat_frequency == Settings().flows.heartbeat_frequency
    api.close()


def test_a_server_that_cannot_start_says_why(no_configured_api, tmp_path):
    no_configured_api.setenv("PREFECT_API_DATABASE_CONNECTION_URL", "nosuchdialect://nowhere/db")
    api = PrefectAPI(log_file=tmp_path / "prefect-api.log", startup_timeout=120)
    api.start_in_background()
    with pytest.raises(RuntimeError, match=r"Prefect's temporary API exited \(\d+\): .*nosuchdialect"):
        api.ready()
    api.close()


def test_an_api_named_by_the_active_profile_is_used_and_nothing_is_left_running(no_configured_api, tmp_path):
    """The temporary server is launched before Prefect's settings are read (importing Prefect
    takes seconds); when the active profile names an API after all, it is stopped again."""
    from prefect.context import refresh_global_settings_context

    profiles = tmp_path / "profiles.toml"
    profiles.write_text('active = "remote"\n\n[profiles.remote]\nPREFECT_API_URL = "http://127.0.0.1:9/api"\n')
    no_configured_api.setenv("PREFECT_PROFILES_PATH", str(profiles))
    refresh_global_settings_context()
    launched = []
    original = PrefectAPI._launch

    def launch(self):
        original(self)
        launched.append(self.process)

    no_configured_api.setattr(PrefectAPI, "_launch", launch)
    api = PrefectAPI(log_file=tmp_path / "prefect-api.log")
    api.start_in_background()
    assert api.ready() == "http://127.0.0.1:9/api"
    assert api.process is None
    assert len(launched) == 1 and launched[0].poll() is not None  # launched, then stopped
    api.close()
