"""The faust-streaming worker of ``test_faust_adapter``: quotaflow's pass-through agent
(requests → quota), registered on a faust app through :mod:`streams.faust_adapter`.

    QUOTAFLOW_LOG=kafka QUOTAFLOW_KAFKA_BOOTSTRAP_SERVERS=… QUOTAFLOW_STREAM_PREFIX=… \\
        python -m tests.kafka.faust_app worker --without-web -l info
"""

from __future__ import annotations

import os

import faust

from quotaflow.settings import Settings
from quotaflow.wiring import event_log, topology
from streams.agents.passthrough import register_passthrough
from streams.faust_adapter import register_on_faust
from streams.runtime.app import App

settings = Settings()
topo = topology(settings)
app = App("quotaflow", event_log(settings, name="quotaflow-faust"), topology=topo)
register_passthrough(app, app.topic(topo.requests), app.topic(topo.quota))

faust_app = faust.App(
    os.environ.get("FAUST_APP_ID", f"{settings.stream_prefix}faust"),  # the consumer group
    broker=f"kafka://{settings.kafka_bootstrap_servers}",
    store="memory://",
    web_enabled=False,
    topic_disable_leader=True,
    broker_commit_interval=0.5,
    broker_rebalance_timeout=2.0,
    broker_session_timeout=10.0,
    broker_heartbeat_interval=1.0,
)
register_on_faust(faust_app, app)

if __name__ == "__main__":
    faust_app.main()
