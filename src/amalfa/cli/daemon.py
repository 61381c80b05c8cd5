"""``amalfa daemon start|stop|status|serve``: run the embedding daemon (:mod:`amalfa.daemon`)."""

from __future__ import annotations

from amalfa.cli._context import Context
from amalfa.cli._errors import EXIT_NOT_RUNNING, EXIT_OK
from amalfa.cli._parsing import Commands, listen_port

ORDER = 60


def register(commands: Commands) -> None:
    actions = commands.group(
        "daemon", "run the embedding daemon (start, stop, status, serve)",
        "The vector daemon keeps the embedding model loaded and answers embedding "
        "requests on 127.0.0.1 ($VECTOR_PORT, default 3010); amalfa asks it first and "
        "falls back to the local model.", dest="daemon_command")
    for name, help_text, description in (
        ("start", "start the daemon in the background",
         ("Start the daemon as a background process (a running daemon or a stale pid file is "
          "detected).")),
        ("stop", "stop the running daemon", "Stop the daemon with SIGTERM and wait for it."),
        ("status", "show whether the daemon runs, and its model",
         ("Show the daemon's pid, port, model and readiness. Exits 0 when it runs and 3 when it "
          "does not (as LSB init scripts do).")),
        ("serve", "run the daemon in the foreground",
         "Run the daemon in this process until Ctrl-C or SIGTERM (for service managers)."),
    ):
        action = actions.add(name, help_text, description, cmd_daemon)
        action.add_argument("--root", metavar="DIR", default=None,
                            help="the project folder whose .amalfa/ holds the daemon's pid and "
                                 "log files (default: the settings' root)")
        if name in ("start", "serve"):
            action.add_argument("--port", type=listen_port, default=None,
                                help="the TCP port on 127.0.0.1; 0 picks a free one (default: "
                                     "$VECTOR_PORT or 3010)")
            action.add_argument("--model", metavar="NAME_OR_DIR", default=None,
                                help="the embedding model to serve: a model name or a folder "
                                     "with model.onnx and tokenizer.json (default: the "
                                     "settings' embeddings.model)")


def cmd_daemon(ctx: Context) -> int:
    """Delegate to :mod:`amalfa.daemon`; its pid and log files live under the project's
    ``.amalfa`` folder (the settings' root)."""
    from amalfa import daemon

    action = ctx.args.daemon_command
    root = ctx.args.root or ctx.settings.root
    if action == "serve":
        return int(daemon.serve(port=ctx.args.port, root=root, model=ctx.args.model))
    if action == "start":
        report = daemon.start(port=ctx.args.port, root=root, model=ctx.args.model)
        text = ("already running: " if report.get("already_running") else "started: ") + \
            daemon.describe_status(report)
        status = EXIT_OK
    elif action == "stop":
        report = daemon.stop(root=root)
        text = (f"stopped (pid {report['pid']})" if report.get("stopped")
                else "was not running")
        if report.get("removed_stale_pid_file"):
            text += "; removed a stale pid file"
        status = EXIT_OK
    else:
        report = daemon.status(root=root)
        text = daemon.describe_status(report)
        status = EXIT_OK if report.get("running") else EXIT_NOT_RUNNING
    if ctx.json:
        ctx.emit_json(report)
    else:
        ctx.print(f"daemon {text}")
    return status
