"""`omni serve` itself failing, with real processes: killed with SIGKILL while clients
ingest on every channel, and started a second time on a data directory a live one holds.

Asserted as a user would notice it: after a restart every acknowledged message is in
its customer's history exactly once, the channels' redelivery of the others stores each
once, no customer is split; a second server refuses at once and leaves the first alone.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest

from tests.channel_traffic import CHANNELS, Ledger, Sender, config_sections, send, stored
from tests.processes import ADMIN, Omni, alive, free_port, omni_env, valkey_pid

pytestmark = pytest.mark.single_server(
    "omni serve on its own embedded Valkey (one server by design): the cluster run "
    "would repeat the single-server run as it is"
)

MESSAGES = 80  # per sender; bounded


def _config(tmp_path: Path, port: int) -> Path:
    config = tmp_path / "omni.toml"
    config.write_text(
        config_sections(f"http://127.0.0.1:{port}") + f'[redis]\ndata_dir = "{tmp_path / "var"}"\n'
    )
    return config


async def test_omni_killed_under_ingest_loses_no_acknowledged_message_and_splits_no_one(
    tmp_path: Path,
) -> None:
    port = free_port()
    env = omni_env(_config(tmp_path, port))
    first = Omni(env, tmp_path / "first.log", port=port).start()
    second = Omni(env, tmp_path / "second.log", port=port)
    senders = [Sender(channel, k) for channel in CHANNELS for k in range(1, 3)]
    ledger = Ledger()
    base = first.url
    try:
        await first.ready()
        orphan = valkey_pid(tmp_path / "var")
        async with aiohttp.ClientSession() as session:

            async def client(sender: Sender) -> None:
                for n in range(1, MESSAGES + 1):
                    await send(session, base, base, sender, n, ledger, timeout_s=5)
                    # A third of the way: the other clients have requests in flight.
                    third = ledger.acked_total >= len(senders) * MESSAGES // 3
                    if third and first.process is not None and first.process.returncode is None:
                        first.kill()

            await asyncio.gather(*(client(s) for s in senders))
            acked_before = ledger.acked_total
            unacked_before = sum(len(v) for v in ledger.unacked.values())
            assert 0 < acked_before < len(senders) * MESSAGES

            second.start()
            await second.ready()
            # The dead server's Valkey was left running; the new one stopped and replaced it.
            assert not alive(orphan)
            assert valkey_pid(tmp_path / "var") != orphan

            # The channels send again everything not acknowledged (and, being channels,
            # some of what was: Instagram redelivers after a slow answer).
            for sender in senders:
                for n in sorted(ledger.unacked.get(sender, set()) | {1, 2}):
                    assert await send(session, base, base, sender, n, ledger) in (200, 201)

            customers = set()
            for sender in senders:
                cid, ids = await stored(session, base, sender)
                customers.add(cid)
                assert sorted(ids) == sorted(sender.message_id(n) for n in range(1, MESSAGES + 1))
                async with session.get(
                    f"{base}/v1/customers/{cid}/context", headers=ADMIN
                ) as response:
                    context = await response.json()
                identities = [
                    (i["channel"], i["external_id"]) for i in context["customer"]["identities"]
                ]
                assert identities == [(sender.channel, sender.external_id)]
            assert len(customers) == len(senders)
        print(
            f"omni killed: {acked_before} acknowledged before the kill, 0 lost, "
            f"{unacked_before} unacknowledged sent again, each stored once"
        )
    finally:
        code = second.stop()
        if first.process is not None and first.process.poll() is None:
            first.stop()
    assert code == 0, second.tail()
    assert "Traceback" not in second.log_path.read_text(), second.tail(60)


async def test_a_second_server_on_a_held_data_directory_refuses_and_leaves_the_first_alone(
    tmp_path: Path,
) -> None:
    port = free_port()
    env = omni_env(_config(tmp_path, port))
    first = Omni(env, tmp_path / "first.log", port=port).start()
    try:
        await first.ready()
        held = valkey_pid(tmp_path / "var")
        other = free_port()
        result = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "omni.cli", "serve", "--port", str(other)],
            env=env,
            capture_output=True,
            timeout=30,
        )
        err = result.stderr.decode()
        assert result.returncode == 2, err
        refusal = err.strip().splitlines()[-1]
        assert f"pid {first.pid}" in refusal and f"port {port}" in refusal, refusal
        assert "OMNI_REDIS_DATA_DIR" in refusal and "OMNI_REDIS_URL" in refusal, refusal
        assert "Traceback" not in err
        # The first one's Redis was not touched: same process, still serving.
        assert valkey_pid(tmp_path / "var") == held and alive(held)
        async with (
            aiohttp.ClientSession() as session,
            session.get(first.url + "/readyz") as response,
        ):
            assert response.status == 200
    finally:
        code = first.stop()
    assert code == 0, first.tail()
    assert not alive(held)
