"""`deramos rate` without a browser: the clips manifest, what the server serves and refuses, the
output lines (read back by the training manifest reader), concurrency, resuming and the exports."""

from __future__ import annotations

import json
import os
import socket
import threading
from pathlib import Path

import numpy as np
import pytest
from rating_helpers import SYSTEMS, request, serving, snapshot, write_clips

from deramos_reward.cli import main
from deramos_reward.data import load_dataset_split
from deramos_reward.integrations.training.dpo.pairs import PAIR_COLUMNS, load_pairs
from deramos_reward.rating import (
    AlreadyRated,
    RatingLog,
    UnknownItem,
    build_items,
    export_mos,
    export_pairs,
    rater_order,
    read_clips,
    stop_server,
)
from deramos_reward.rating.server import RatingHandler


@pytest.fixture
def clips_dir(tmp_path):
    write_clips(tmp_path, codes=True)
    return tmp_path


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


# ------------------------------------------------------------------------------------ manifest


def test_clips_manifest_errors_name_the_line(tmp_path):
    manifest = write_clips(tmp_path)
    good = manifest.read_text().splitlines()
    cases = {
        '{"path": "clips/gen_a/p0.wav", "prompt": "x", "MI": 3}': "unknown key",
        '{"path": "clips/none.wav", "prompt": "x"}': "does not exist",
        '{"path": "clips.jsonl", "prompt": "x"}': "not an audio file",
        '{"path": "clips/gen_a/p0.wav"}': "missing required key 'prompt'",
        '{"path": "clips/gen_a/p0.wav", "prompt": "x", "judge_mi": 3}': "judge_ta",
        "[1, 2]": "expected a JSON object",
        good[0]: "already used on line 1",
    }
    for line, message in cases.items():
        manifest.write_text(good[0] + "\n" + line + "\n")
        with pytest.raises(ValueError, match=message) as err:
            read_clips(manifest)
        assert ":2:" in str(err.value)


def test_a_listed_symlink_leading_out_of_the_manifest_folder_is_refused(tmp_path):
    outside = tmp_path / "outside.wav"
    root = tmp_path / "set"
    write_clips(root)
    (root / "clips" / "gen_a" / "p0.wav").rename(outside)
    os.symlink(outside, root / "clips" / "gen_a" / "p0.wav")
    with pytest.raises(ValueError, match="outside the audio root"):
        read_clips(root / "clips.jsonl")
    assert len(read_clips(root / "clips.jsonl", audio_root=tmp_path)) == 6  # a wider root allows it


def test_items_and_orders(tmp_path):
    clips = read_clips(write_clips(tmp_path))
    mos = build_items(clips, "mos")
    assert [i.id for i in mos] == [c.id for c in clips]
    ab = build_items(clips, "ab")
    assert len(ab) == 2 * 3  # two prompts, three clips each: 3 pairs per prompt
    assert all(clips[i.clips[0]].prompt == clips[i.clips[1]].prompt == i.prompt for i in ab)
    assert len(build_items(clips, "ab", max_pairs_per_prompt=1)) == 2
    alice, bob = rater_order(mos, "alice"), rater_order(mos, "bob")
    assert alice == rater_order(mos, "alice") and sorted(i.id for i in alice) == sorted(i.id for i in mos)
    assert [i.id for i in alice] != [i.id for i in bob]
    with pytest.raises(ValueError, match="mode"):
        build_items(clips, "abx")


# ------------------------------------------------------------------------------------ security


def test_only_listed_files_are_served(clips_dir, tmp_path):
    secret = tmp_path.parent / f"secret-{tmp_path.name}.wav"
    secret.write_bytes(b"RIFF secret")
    os.symlink(secret, clips_dir / "clips" / "link.wav")  # in the folder, not in the manifest
    with serving(clips_dir / "clips.jsonl", clips_dir / "r.jsonl") as server:
        status, body = request(server, "GET", "/audio/0")
        assert status == 200 and body == (clips_dir / "clips" / "gen_a" / "p0.wav").read_bytes()
        attacks = [
            "/audio/../clips.jsonl",
            "/audio/..%2fclips.jsonl",
            "/audio/%2e%2e/%2e%2e/etc/passwd",
            "/audio/%2E%2E%2F%2E%2E%2Fetc%2Fpasswd",
            "/audio//etc/passwd",
            "/audio/%2Fetc%2Fpasswd",
            f"/audio/{secret}",
            "/audio/link.wav",
            "/clips/link.wav",
            "/clips/gen_a/p0.wav",
            "/audio/6",
            "/audio/-1",
            "/audio/0/../1",
            "/audio/1%00.wav",
            "/../clips.jsonl",
            "/clips.jsonl",
        ]
        for path in attacks:
            status, body = request(server, "GET", path)
            assert status == 404, path
            assert b"secret" not in json.dumps(body).encode()


def test_a_clip_swapped_for_a_symlink_after_start_is_not_served(clips_dir, tmp_path):
    secret = tmp_path.parent / f"secret2-{tmp_path.name}.wav"
    secret.write_bytes(b"RIFF secret")
    with serving(clips_dir / "clips.jsonl", clips_dir / "r.jsonl") as server:
        clip = clips_dir / "clips" / "gen_a" / "p0.wav"
        clip.unlink()
        os.symlink(secret, clip)
        assert request(server, "GET", "/audio/0")[0] == 404
        assert request(server, "GET", "/audio/1")[0] == 200


def test_token_guards_data_and_audio_but_not_the_static_page(clips_dir):
    with serving(clips_dir / "clips.jsonl", clips_dir / "r.jsonl", token="s3cret") as server:
        assert request(server, "GET", "/")[0] == 200
        assert request(server, "GET", "/api/next?rater=al")[0] == 401
        assert request(server, "GET", "/audio/0")[0] == 401
        assert request(server, "GET", "/audio/0?token=wrong")[0] == 401
        assert request(server, "GET", "/audio/0?token=s3cret")[0] == 200
        status, body = request(server, "GET", "/api/next?rater=al", headers={"X-Deramos-Token": "s3cret"})
        assert status == 200 and body["total"] == 6


def test_binds_loopback_and_checks_the_host_header(clips_dir):
    with serving(clips_dir / "clips.jsonl", clips_dir / "r.jsonl") as server:
        assert server.server_address[0] == "127.0.0.1"
        status, body = request(server, "GET", "/api/next?rater=al", headers={"Host": "attacker.example:80"})
        assert status == 400 and "Host" in body["error"]


def _raw(server, data: bytes) -> bytes:
    with socket.create_connection(server.server_address[:2], timeout=10) as sock:
        sock.sendall(data)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def test_malformed_requests_get_a_4xx_and_change_nothing_on_disk(clips_dir):
    out = clips_dir / "r.jsonl"
    with serving(clips_dir / "clips.jsonl", out, raters=frozenset({"al", "bo"})) as server:
        assert (
            request(
                server,
                "POST",
                "/api/rate",
                {"rater": "al", "item": "clips/gen_a/p0", "answer": {"mi": 3, "ta": 4}},
            )[0]
            == 200
        )
        before = snapshot(clips_dir)
        item = "clips/gen_b/p1"
        bad = [
            ({"rater": "al", "item": item, "answer": {"mi": 6, "ta": 3}}, {}, 400),
            ({"rater": "al", "item": item, "answer": {"mi": 0, "ta": 3}}, {}, 400),
            ({"rater": "al", "item": item, "answer": {"mi": "4", "ta": 3}}, {}, 400),
            ({"rater": "al", "item": item, "answer": {"mi": True, "ta": 3}}, {}, 400),
            ({"rater": "al", "item": item, "answer": {"mi": 4.5, "ta": 3}}, {}, 400),
            ({"rater": "al", "item": item, "answer": {"mi": 4}}, {}, 400),
            ({"rater": "al", "item": item, "answer": {"mi": 4, "ta": 3, "x": 1}}, {}, 400),
            ({"rater": "al", "item": item, "answer": {"choice": "a"}}, {}, 400),
            ({"rater": "al", "item": item}, {}, 400),
            ({"rater": "../x", "item": item, "answer": {"mi": 4, "ta": 3}}, {}, 400),
            ({"rater": "zed", "item": item, "answer": {"mi": 4, "ta": 3}}, {}, 403),
            ({"rater": "al", "item": "nope", "answer": {"mi": 4, "ta": 3}}, {}, 404),
            ({"rater": "al", "item": ["x"], "answer": {"mi": 4, "ta": 3}}, {}, 404),
            ({"rater": "al", "item": "clips/gen_a/p0", "answer": {"mi": 4, "ta": 3}}, {}, 409),
            ([1, 2], {}, 400),
            (b"{not json", {}, 400),
            (b"\xff\xfe", {}, 400),
            (b'{"rater": "al"}', {"Content-Type": "text/plain"}, 415),
            (b"x" * 20000, {}, 413),
        ]
        for body, headers, expected in bad:
            status, payload = request(server, "POST", "/api/rate", body, headers)
            assert status == expected, (body, payload)
            assert isinstance(payload["error"], str) and payload["error"]
        assert request(server, "GET", "/api/rate")[0] == 405
        assert request(server, "PUT", "/api/rate", {"rater": "al"})[0] == 405
        assert request(server, "DELETE", "/audio/0")[0] == 405
        assert request(server, "GET", "/api/next")[0] == 400
        assert request(server, "GET", "/api/next?rater=a%20b")[0] == 400
        assert request(server, "GET", "/api/next?rater=al&&&=")[0] == 400
        assert request(server, "GET", "/audio/0", headers={"Range": "bytes=999999-"})[0] == 416
        host = f"127.0.0.1:{server.server_address[1]}".encode()
        no_length = (
            b"POST /api/rate HTTP/1.1\r\nHost: " + host + b"\r\nContent-Type: application/json\r\n\r\n"
        )
        assert _raw(server, no_length).startswith(b"HTTP/1.0 411")
        assert _raw(server, b"BREW /api/rate HTTP/1.1\r\n\r\n").startswith(b"HTTP/1.0 405")
        assert _raw(server, b"GET / HTTP/9.9\r\n\r\n").startswith(b"HTTP/1.0 400")
        assert _raw(server, b"GET /\x00 nonsense\r\n\r\n").startswith(b"HTTP/1.0 400")
        assert snapshot(clips_dir) == before
        assert len(_lines(out)) == 1


def _closed_by_server(sock: socket.socket) -> bool:
    """Reads to the end of the connection: True once the server closed it, False if the socket's
    timeout (a hang guard) ran out first."""
    try:
        while sock.recv(65536):
            pass
    except ConnectionResetError:
        pass
    except TimeoutError:
        return False
    return True


def test_stopping_hangs_up_idle_connections_and_cuts_stalled_requests(clips_dir, monkeypatch):
    # Without the handler timeout, a server that waited for these connections would never stop.
    monkeypatch.setattr(RatingHandler, "timeout", None)
    with serving(clips_dir / "clips.jsonl", clips_dir / "r.jsonl") as server:
        address = server.server_address[:2]
        idle = socket.create_connection(address, timeout=60)  # a browser's speculative connection
        stalled = socket.create_connection(address, timeout=60)  # a client that stops mid-body
        host = f"127.0.0.1:{address[1]}".encode()
        stalled.sendall(
            b"POST /api/rate HTTP/1.1\r\nHost: " + host + b"\r\nContent-Type: application/json\r\n"
            b"Content-Length: 100\r\n\r\n{"
        )
        try:
            # connections are accepted in order: once this is answered, both above have a handler
            assert request(server, "GET", "/")[0] == 200
            stopper = threading.Thread(target=stop_server, args=(server,), daemon=True)
            stopper.start()
            stopper.join(timeout=120)  # a hang guard: it returns after RatingServer.stop_grace_s
            assert not stopper.is_alive(), "stop_server waited for connections that sent no (full) request"
            assert _closed_by_server(idle) and _closed_by_server(stalled)
        finally:
            idle.close()
            stalled.close()
    assert (clips_dir / "r.jsonl").read_text() == ""


def test_audio_byte_ranges(clips_dir):
    data = (clips_dir / "clips" / "gen_b" / "p0.wav").read_bytes()
    with serving(clips_dir / "clips.jsonl", clips_dir / "r.jsonl") as server:
        assert request(server, "GET", "/audio/2", headers={"Range": "bytes=10-19"}) == (206, data[10:20])
        assert request(server, "GET", "/audio/2", headers={"Range": "bytes=-5"}) == (206, data[-5:])
        assert request(server, "GET", "/audio/2", headers={"Range": f"bytes={len(data) - 3}-"}) == (
            206,
            data[-3:],
        )


# ------------------------------------------------------------------------------ writing, resuming


def test_mos_lines_train_manifest_round_trip(clips_dir):
    out = clips_dir / "ratings" / "r.jsonl"
    out.parent.mkdir()
    with serving(clips_dir / "clips.jsonl", out) as server:
        for rater, offset in (("al", 0), ("bo", 1)):
            for n in range(6):
                status, payload = request(server, "GET", f"/api/next?rater={rater}")
                item = payload["item"]
                assert payload["done"] == n and payload["total"] == 6 and "judge" not in item["clips"][0]
                answer = {"mi": 1 + (n + offset) % 5, "ta": 5 - n % 5}
                assert (
                    request(
                        server, "POST", "/api/rate", {"rater": rater, "item": item["id"], "answer": answer}
                    )[0]
                    == 200
                )
            assert request(server, "GET", f"/api/next?rater={rater}")[1]["item"] is None
    lines = _lines(out)
    assert len(lines) == 12 and len({line["id"] for line in lines}) == 12
    assert {line["split"] for line in lines} <= {"train", "dev"}
    examples = load_dataset_split(out, None)
    by_id = {ex.wav_id: ex for ex in examples}
    for line in lines:
        ex = by_id[line["id"]]
        clip = line["id"].rpartition("@")[0]
        assert os.path.realpath(ex.path) == os.path.realpath(clips_dir / (clip + ".wav"))
        assert (ex.mi, ex.ta, ex.system) == (line["mi"], line["ta"], clip.split("/")[1])
    mos = clips_dir / "mos.jsonl"
    assert export_mos(out, mos) == 6
    means = {ex.wav_id: ex for ex in load_dataset_split(mos, None)}
    for clip in {line["id"].rpartition("@")[0] for line in lines}:
        mine = [line for line in lines if line["id"].startswith(clip + "@")]
        assert means[clip].mi == pytest.approx(np.mean([line["mi"] for line in mine]))
        assert means[clip].ta == pytest.approx(np.mean([line["ta"] for line in mine]))


def test_resume_skips_rated_items_cuts_a_torn_line_and_refuses_a_second_writer(clips_dir):
    manifest, out = clips_dir / "clips.jsonl", clips_dir / "r.jsonl"
    clips = read_clips(manifest)
    items = build_items(clips, "mos")
    with RatingLog(out, "mos", clips, items) as log:
        first = log.next_item("al")
        assert log.record("al", first.id, {"mi": 2, "ta": 3}) == (1, 6)
        with pytest.raises(AlreadyRated):
            log.record("al", first.id, {"mi": 2, "ta": 3})
        with pytest.raises(UnknownItem):
            log.record("al", "nope", {"mi": 2, "ta": 3})
        with pytest.raises(ValueError, match="another deramos rate"):
            RatingLog(out, "mos", clips, items).open()
        second = log.next_item("al")
        assert second.id != first.id
    with open(out, "ab") as f:
        f.write(b'{"path": "torn')  # killed mid-write
    with RatingLog(out, "mos", clips, items) as log:
        assert log.progress("al") == (1, 6) and log.next_item("al") == second
        log.record("al", second.id, {"mi": 5, "ta": 1})
    assert [line["mi"] for line in _lines(out)] == [2, 5]
    with pytest.raises(ValueError, match="holds MOS ratings"):
        RatingLog(out, "ab", clips, build_items(clips, "ab")).open()


def test_concurrent_raters_lose_and_duplicate_nothing(clips_dir):
    out = clips_dir / "r.jsonl"
    with serving(clips_dir / "clips.jsonl", out) as server:
        results: list[int] = []

        def rater(name: str) -> None:
            for _ in range(6):
                item = request(server, "GET", f"/api/next?rater={name}")[1]["item"]
                body = {"rater": name, "item": item["id"], "answer": {"mi": 3, "ta": 3}}
                results.append(request(server, "POST", "/api/rate", body)[0])

        def racer() -> None:  # one rater, one item, many tabs at once
            body = {"rater": "race", "item": "clips/gen_c/p1", "answer": {"mi": 1, "ta": 1}}
            results.append(request(server, "POST", "/api/rate", body)[0])

        threads = [threading.Thread(target=rater, args=(f"r{i}",)) for i in range(4)]
        threads += [threading.Thread(target=racer) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
    lines = _lines(out)
    assert sorted(results).count(409) == 7 and results.count(200) == 4 * 6 + 1
    assert len(lines) == 25 and len({line["id"] for line in lines}) == 25


# ------------------------------------------------------------------------------------------ A/B


def test_ab_votes_sides_and_pairs_export(clips_dir):
    manifest, out = clips_dir / "clips.jsonl", clips_dir / "votes.jsonl"
    clips = read_clips(manifest)
    chosen: dict[str, list[str]] = {}
    with serving(manifest, out, mode="ab", show_judge=True) as server:
        sides = {}
        for rater in ("al", "bo", "cy"):
            for _ in range(6):
                item = request(server, "GET", f"/api/next?rater={rater}")[1]["item"]
                a, b = (clips[int(c["audio"].split("/")[-1])] for c in item["clips"])
                assert item["clips"][0]["judge"] == {"mi": a.judge[0], "ta": a.judge[1]}
                sides.setdefault(item["id"], set()).add(a.id)
                # every rater prefers the clip of the lower-numbered system
                choice = "a" if a.system < b.system else "b"
                if rater == "cy" and item["id"].startswith("clips/gen_a/p0|clips/gen_b"):
                    choice = "tie"
                winner = a.id if choice == "a" else b.id
                chosen.setdefault(item["id"], []).append(winner if choice != "tie" else "tie")
                body = {"rater": rater, "item": item["id"], "answer": {"choice": choice}}
                assert request(server, "POST", "/api/rate", body)[0] == 200
        assert any(len(s) == 2 for s in sides.values())  # raters hear different sides
    lines = _lines(out)
    assert len(lines) == 18 and {line["choice"] for line in lines} == {"a", "b", "tie"}
    pairs = export_pairs(clips, manifest, out, clips_dir / "pairs")
    assert len(pairs) == 6 and set(PAIR_COLUMNS) <= set(pairs.column_names)
    loaded = load_pairs(clips_dir / "pairs")
    index = {c.id: c for c in clips}
    codes = {c.id: np.load(clips_dir / (c.id + ".npy")).tolist() for c in clips}
    for row in loaded:
        pair = sorted([row["chosen_codes"], row["rejected_codes"]])
        item = next(i for i in chosen if sorted(codes[c] for c in i.split("|")) == pair)
        x, y = item.split("|")
        votes = chosen[item]
        share_x = (votes.count(x) + 0.5 * votes.count("tie")) / 3
        assert row["prompt"] == index[x].prompt
        assert row["scores"] == pytest.approx([share_x, 1 - share_x])
        winner = x if share_x > 0.5 else y
        assert row["chosen_codes"] == codes[winner]
        assert index[winner].system == min(index[x].system, index[y].system)
        assert row["margin"] == pytest.approx(abs(2 * share_x - 1))
    assert {row["prompt_index"] for row in loaded} == {0, 1}
    with pytest.raises(FileExistsError):
        export_pairs(clips, manifest, out, clips_dir / "pairs")
    with pytest.raises(ValueError, match="no item"):
        export_pairs(clips, manifest, out, clips_dir / "pairs2", min_margin=1.0)


def test_cli_rate_exports_and_errors(clips_dir, capsys):
    votes = clips_dir / "votes.jsonl"
    row = {
        "item": "clips/gen_a/p0|clips/gen_b/p0",
        "prompt": "a calm piano piece",
        "choice": "b",
        "rater": "al",
    }
    row["a"] = {"id": "clips/gen_a/p0", "path": "clips/gen_a/p0.wav", "system": SYSTEMS[0]}
    row["b"] = {"id": "clips/gen_b/p0", "path": "clips/gen_b/p0.wav", "system": SYSTEMS[1]}
    votes.write_text(json.dumps(row) + "\n")
    argv = ["rate", "--clips", str(clips_dir / "clips.jsonl"), "--out", str(votes)]
    assert main([*argv, "--export-pairs", str(clips_dir / "pairs")]) == 0
    pairs = load_pairs(clips_dir / "pairs")
    assert pairs[0]["chosen_codes"] == np.load(clips_dir / "clips/gen_b/p0.npy").tolist()
    assert main([*argv, "--export-mos", str(clips_dir / "m.jsonl")]) == 2
    assert "not a MOS line" in capsys.readouterr().err
    assert main(["rate", "--clips", str(clips_dir / "none.jsonl"), "--out", str(votes)]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main([*argv, "--port", "70000"]) == 2
    assert "--port" in capsys.readouterr().err
    assert main([*argv, "--model", str(clips_dir)]) == 2
    assert "--show-judge" in capsys.readouterr().err


def test_cli_serves_with_judge_scores_and_stops_on_ctrl_c(clips_dir, tiny_checkpoint):
    import queue
    import signal
    import subprocess
    import sys
    from urllib.parse import parse_qs, urlsplit

    import deramos_reward as dr

    manifest, out = clips_dir / "clips.jsonl", clips_dir / "r.jsonl"
    argv = [sys.executable, "-m", "deramos_reward.cli", "rate", "--clips", str(manifest), "--out", str(out)]
    argv += ["--port", "0", "--show-judge", "--model", str(tiny_checkpoint), "--token", "auto"]
    # Started with SIGINT ignored, as a shell starts a command a script runs with '&' (and so the test
    # does not depend on how pytest itself was started): Ctrl-C must stop the server all the same.
    argv = ["sh", "-c", 'trap "" INT; exec "$@"', "sh", *argv]
    proc = subprocess.Popen(argv, stderr=subprocess.PIPE, text=True)
    lines: queue.Queue = queue.Queue()
    reader = threading.Thread(target=lambda: [lines.put(line) for line in proc.stderr], daemon=True)
    reader.start()
    try:
        url = None
        while url is None:  # bounded: each wait times out
            line = lines.get(timeout=180)
            if "open http" in line:
                url = urlsplit(line.split("open ", 1)[1].split()[0])
        token = parse_qs(url.query)["token"][0]

        class Server:  # what request() needs
            server_address = (url.hostname, url.port)

        status, payload = request(Server, "GET", f"/api/next?rater=al&token={token}")
        assert status == 200 and url.hostname == "127.0.0.1"
        clip = read_clips(manifest)[int(payload["item"]["clips"][0]["audio"].split("/")[-1])]
        expected = dr.score(dr.DeRAMOS.from_pretrained(tiny_checkpoint), [clip.file], [clip.prompt])[0]
        judge = payload["item"]["clips"][0]["judge"]
        assert judge == {"mi": round(expected["mi"], 2), "ta": round(expected["ta"], 2)}
        assert request(Server, "GET", "/api/next?rater=al")[0] == 401
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 130
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
    reader.join(timeout=30)  # stderr is closed: the reader has queued every line
    rest = []
    while not lines.empty():
        rest.append(lines.get())
    assert any("interrupted" in line for line in rest)
    assert out.read_text() == ""  # created, nothing rated
