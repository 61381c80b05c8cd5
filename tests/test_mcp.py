"""`amalfa serve` driven by the MCP SDK's own client over stdio, on a small real corpus.

The corpus is ingested by `amalfa init` (real model), the server is a real subprocess, and every
call goes through the protocol: tool listing, search, read, explore, related, stats, the
scratchpad reference for a large output and its read-back, and malformed calls.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest

pytest.importorskip("mcp")

from mcp.client.session import ClientSession  # noqa: E402
from mcp.client.stdio import StdioServerParameters, stdio_client  # noqa: E402

from amalfa.mcp_server import TOOL_NAMES  # noqa: E402

UNIQUE = "The saffron heron nests beneath the copper viaduct every October."
BIG_LINE = "Filler sentence about tide tables and harbour charts for the long document.\n"

DOCS = {
    "heron.md": f"---\ntitle: Heron\n---\n# Heron\n\n{UNIQUE}\n\nSee [the bridge](bridge.md).\n",
    "bridge.md": "---\ntitle: Bridge\n---\n# Bridge\n\nA viaduct of copper. See [tides](tides.md).\n",
    "tides.md": "# Tides\n\n" + BIG_LINE * 120 + "\nBack to [heron](heron.md).\n",
    "alone.md": "# Alone\n\nA note about bread and yeast, linked to nothing.\n",
}


def _environment(home: Path) -> dict[str, str]:
    environment = {key: value for key, value in os.environ.items()
                   if key not in ("AMALFA_MODEL_PATH", "EMBEDDING_MODEL", "AMALFA_DEBUG",
                                  "AMALFA_SETTINGS")}
    environment.update(HOME=str(home), HF_HUB_OFFLINE="1")
    return environment


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    root = tmp_path_factory.mktemp("mcp")
    (root / "docs").mkdir()
    for name, text in DOCS.items():
        (root / "docs" / name).write_text(text, encoding="utf-8")
    (root / "amalfa.settings.json").write_text(json.dumps({
        "sources": ["docs"], "scratchpad": {"thresholdBytes": 4096}}))
    env = _environment(root)
    proc = subprocess.run([sys.executable, "-m", "amalfa", "init"], cwd=root, env=env,
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    return root, env


async def _session_calls(root: Path, env: dict[str, str],
                         calls: list[tuple[str, dict[str, Any]]]) -> tuple[list[str], list[Any]]:
    params = StdioServerParameters(command=sys.executable, args=["-m", "amalfa", "serve"],
                                   cwd=str(root), env=env)
    results = []
    with open(os.devnull, "w") as quiet:
        async with stdio_client(params, errlog=quiet) as streams, \
                ClientSession(*streams) as session:
            await session.initialize()
            listed = await session.list_tools()
            for name, arguments in calls:
                results.append(await session.call_tool(name, arguments))
    return [tool.name for tool in listed.tools], results


def _drive(corpus, calls):
    root, env = corpus
    return anyio.run(_session_calls, root, env, calls)


def _text(result: Any) -> str:
    return "".join(part.text for part in result.content if part.type == "text")


def test_lists_the_tools_and_answers_search_read_explore(corpus) -> None:
    names, (search, read, explore, related, stats, expanded) = _drive(corpus, [
        ("search", {"query": "where does the heron nest", "limit": 3}),
        ("read", {"node_id": "docs-heron"}),
        ("explore", {"node_id": "docs-heron", "depth": 2}),
        ("related", {"node_id": "docs-bridge", "k": 2}),
        ("stats", {}),
        ("search", {"query": "where does the heron nest", "limit": 1, "expand": 1}),
    ])
    assert set(TOOL_NAMES) <= set(names)
    for result in (search, read, explore, related, stats):
        assert not result.is_error, _text(result)
    hits = json.loads(_text(search))
    assert hits[0]["id"] == "docs-heron" and hits[0]["source"] == "docs/heron.md"
    assert UNIQUE[:20] in hits[0]["snippet"] and hits[0]["line"] == 6  # the passage's line
    text = _text(read)
    assert UNIQUE in text and "title: Heron" not in text  # front matter off
    graph = json.loads(_text(explore))
    depths = {node["id"]: node["depth"] for node in graph["nodes"]}
    assert depths["docs-heron"] == 0 and depths["docs-bridge"] == 1
    assert depths["docs-tides"] == 1  # tides links back to heron
    assert "docs-alone" not in depths
    assert all(edge["type"] for edge in graph["edges"])
    assert "docs-bridge" not in [hit["id"] for hit in json.loads(_text(related))]
    assert json.loads(_text(stats))["nodes"] == len(DOCS)
    rows = json.loads(_text(expanded))
    assert rows[0]["id"] == "docs-heron" and not rows[0].get("expansion")
    assert {row["id"] for row in rows[1:]} == {"docs-bridge", "docs-tides"}
    assert all(row["expansion"] and row["hops"] == 1 for row in rows[1:])


def test_large_output_comes_back_as_a_scratchpad_reference(corpus) -> None:
    _, (big, listing) = _drive(corpus, [("read", {"node_id": "docs-tides"}),
                                        ("scratchpad_list", {})])
    reference = _text(big)
    assert not big.is_error
    assert "Output cached" in reference and len(reference) < 2000
    assert reference.count(BIG_LINE) < 5  # a preview at most, not the 120 lines
    entry_id = json.loads(_text(listing))[0]["id"]
    assert f'"entry_id": "{entry_id}"' in reference
    _, (full,) = _drive(corpus, [("scratchpad_read", {"entry_id": entry_id})])
    assert _text(full).count(BIG_LINE) == 120


@pytest.mark.parametrize(("name", "arguments", "words"), [
    ("explore", {"node_id": "docs-heron", "depth": "deep"}, "depth"),
    ("explore", {"node_id": "docs-heron", "depth": -1}, "depth must be >= 0"),
    ("explore", {"depth": 1}, "node_id"),
    ("explore", {"node_id": "nope"}, "no node with id 'nope'"),
    ("read", {"node_id": "docs-heron", "lines": "9:2"}, "ends before it starts"),
    ("search", {"query": "   "}, "query is empty"),
    ("search", {"query": "heron", "limit": 0}, "limit must be"),
    ("scratchpad_read", {"entry_id": "../../etc"}, "12"),
    ("no_such_tool", {}, "no_such_tool"),
])
def test_malformed_calls_are_error_results_and_the_server_keeps_serving(
        corpus, name: str, arguments: dict[str, Any], words: str) -> None:
    _, (bad, after) = _drive(corpus, [(name, arguments), ("stats", {})])
    assert bad.is_error
    assert words in _text(bad)
    assert not after.is_error and json.loads(_text(after))["nodes"] == len(DOCS)


def test_serve_without_a_database_says_so(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "amalfa", "serve"], cwd=tmp_path,
                          env=_environment(tmp_path), capture_output=True, text=True,
                          timeout=120, check=False, stdin=subprocess.DEVNULL)
    assert proc.returncode == 1
    assert "no database at" in proc.stderr and "amalfa init" in proc.stderr


async def _watching_session(root: Path, env: dict[str, str], sentence: str) -> dict[str, Any]:
    params = StdioServerParameters(command=sys.executable,
                                   args=["-m", "amalfa", "serve", "--watch"],
                                   cwd=str(root), env=env)
    outcome: dict[str, Any] = {}
    with open(os.devnull, "w") as quiet:
        async with stdio_client(params, errlog=quiet) as streams, \
                ClientSession(*streams) as session:
            await session.initialize()
            before = json.loads(_text(await session.call_tool("stats", {})))
            outcome["nodes_before"] = before["nodes"]
            second = subprocess.run([sys.executable, "-m", "amalfa", "watch"], cwd=root,
                                    env=env, capture_output=True, text=True, timeout=300,
                                    check=False)
            outcome["second_watcher"] = (second.returncode, second.stderr)
            (root / "docs" / "kestrel.md").write_text(f"# Kestrel\n\n{sentence}\n")
            deadline = anyio.current_time() + 90  # a ceiling for a broken watcher
            while anyio.current_time() < deadline:
                result = await session.call_tool("search", {"query": sentence, "limit": 1})
                hits = json.loads(_text(result)) if not result.is_error else []
                if hits and hits[0]["id"] == "docs-kestrel":
                    outcome["found"] = hits[0]
                    break
                await anyio.sleep(0.1)
    return outcome


def test_serve_watch_ingests_on_start_and_serves_new_files(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "heron.md").write_text(DOCS["heron.md"])
    (tmp_path / "amalfa.settings.json").write_text(json.dumps(
        {"sources": ["docs"], "watch": {"debounce": 200}}))
    sentence = "A scarlet kestrel hovers over the salt marsh counting voles at noon."
    outcome = anyio.run(_watching_session, tmp_path, _environment(tmp_path), sentence)
    assert outcome["nodes_before"] == 1  # no `amalfa init`: the watcher's first run made it
    code, stderr = outcome["second_watcher"]
    assert code == 1 and "already running" in stderr
    assert outcome.get("found", {}).get("source") == "docs/kestrel.md"
