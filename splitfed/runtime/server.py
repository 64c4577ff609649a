"""The server process: accept clients, run the protocol's rounds, write the run folder."""

from __future__ import annotations

import contextlib
import logging
import re
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from splitfed import registry
from splitfed.config import TRAINING_FIELDS, RunConfig
from splitfed.devices import resolve_device, set_threads, use_precision
from splitfed.errors import ConfigError, DivergedError, RemoteError, Terminated
from splitfed.models import architecture
from splitfed.optim import follow_recipe, start_round
from splitfed.peers import Clients
from splitfed.protocol import DATA_REPORT
from splitfed.runtime.membership import Membership, check_partial
from splitfed.runtime.outputs import RunWriter
from splitfed.runtime.progress import Progress
from splitfed.timeline import mark
from splitfed.transport.base import ServerTransport
from splitfed.transport.link import ServerLink
from splitfed.transport.schemes import server_transport
from splitfed.transport.security import CurveServer
from splitfed.versions import versions
from splitfed.wire import RUNTIME_KINDS, Message

log = logging.getLogger(__name__)


def natural_key(name: str) -> list[Any]:
    """client-2 before client-10."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def accept_clients(link: ServerLink, config: RunConfig, start_round: int = 1) -> None:
    """Wait for ``config.clients`` hellos, then welcome each with its index and the config."""
    while len(link.clients) < config.clients:
        peer, msg = link.recv(expect=("hello",))
        if msg.meta.get("version") != _version():
            link.reject(peer, f"version mismatch: server runs splitfed {_version()}, you run {msg.meta.get('version')}")
            continue
        patience = msg.meta.get("timeout")
        link.register(peer, float(patience) if isinstance(patience, (int, float)) else None)
        log.info("%s joined (%d/%d)", peer, len(link.clients), config.clients)
    link.clients.sort(key=natural_key)
    training = {k: v for k, v in config.to_dict().items() if k in TRAINING_FIELDS}
    for i, peer in enumerate(link.clients):
        meta = {"config": training, "index": i, "clients": config.clients, "start_round": start_round}
        link.reply(peer, Message("welcome", meta=meta))


def _ack(start: Message | None, train: bool = True) -> Message:
    """The runtime's answer to a client's ``ready``, carrying what the role starts it with, and whether
    the client trains in the first round (--clients-per-round)."""
    start = start or Message("ack")
    return Message("ack", meta={**start.meta, "train": train}, tensors=start.tensors)


def _version() -> str:
    from splitfed import __version__

    return __version__


#: settings a resumed run may change; every other training setting must be the checkpoint's own
RESUME_MAY_CHANGE = ("epochs", "timeout", "max_message_mb", "precision")

#: files of a finished or running run; a fresh run refuses a folder that holds any of them
RESULT_FILES = ("metrics.jsonl", "summary.json", "checkpoint.pt")


def check_out_folder(out: Path, resume: bool) -> None:
    """A fresh run never writes into another run's folder (it would mix their rounds)."""
    found = [name for name in RESULT_FILES if (out / name).exists()]
    if found and not resume:
        raise ConfigError(
            f"{out} already holds a run ({', '.join(found)}): continue it with --resume, "
            "or give a new --out (or delete that folder)"
        )


def serve(
    config: RunConfig,
    address: str,
    out: Path,
    *,
    progress: bool = True,
    curve: CurveServer | None = None,
    resume: bool = False,
    transport: ServerTransport | None = None,
) -> Path:
    """Run the server side of a whole run; return the path of summary.json.

    The transport is chosen by the scheme of ``address`` (tcp://, ipc://, inproc://,
    memory://); ``transport`` replaces it (tests wrap it to drop or delay messages).
    """
    device = resolve_device(config.device)
    use_precision(device, config.precision)
    spec = registry.get(config.protocol)
    set_threads(config.threads, spec.busy_parties(config.clients))
    config = config.replace(options=spec.option_values(config.options))  # checked, defaults filled in
    check_partial(config)
    check_out_folder(out, resume)
    checkpoint = load_checkpoint(out, config, spec) if resume else None
    writer = RunWriter(out, tensorboard=config.tensorboard)
    writer.write_config({**config.to_dict(), "versions": versions()})
    transport = transport or server_transport(
        address, max_bytes=config.max_bytes, curve=curve, send_timeout=config.timeout
    )
    link = ServerLink(
        transport, timeout=config.timeout, max_bytes=config.max_bytes, kinds=RUNTIME_KINDS | spec.messages
    )
    log.info(
        "%s server listening at %s for %d client(s)%s",
        config.protocol,
        transport.address,
        config.clients,
        " (encrypted)" if curve else "",
    )
    mark("listening")
    return _ServerRun(config, spec, writer, link, checkpoint, progress).run(device)


class _ServerRun:
    """One run on the server: join, rounds, and the run folder written whatever happens."""

    def __init__(
        self,
        config: RunConfig,
        spec: Any,
        writer: RunWriter,
        link: ServerLink,
        checkpoint: dict[str, Any] | None,
        progress: bool,
    ) -> None:
        self.config, self.spec, self.writer, self.link = config, spec, writer, link
        self.checkpoint = checkpoint
        self.first = checkpoint["round"] + 1 if checkpoint else 1
        self.state: dict[str, Any] = {"status": "running", "rounds_done": 0}
        self.role: Any = None
        if checkpoint:
            writer.keep_metrics_until(checkpoint["round"])
            rows = writer.rows
            self.state["rounds_done"] = self.state["resumed_after_round"] = checkpoint["round"]
            # totals of the rounds already done, so that summary.json still adds up over the whole run
            self.state["prior"] = {k: sum(r[k] for r in rows) for k in ("bytes_sent", "bytes_received", "wall_seconds")}
            for row in rows:  # the best validation round so far, as the uninterrupted run would know it
                if "val_accuracy" in row:
                    self._track_best(row["round"], row)
            log.info("resuming %s after round %d of %d", writer.out, checkpoint["round"], config.epochs)
        self.bar = Progress(config.epochs, config.protocol, enabled=progress, done=self.first - 1)
        self.started = time.monotonic()

    def run(self, device: torch.device) -> Path:
        try:
            self._join(device)
            for rnd in range(self.first, self.config.epochs + 1):
                if self._round(rnd):
                    break
            self.state["status"] = "completed"
        except (KeyboardInterrupt, Terminated):
            self.state["status"] = "interrupted"
            log.warning("interrupted after %d round(s); writing what we have", self.state["rounds_done"])
            self.link.stop_all("the server was interrupted; the run is over")
            raise
        except BaseException as exc:
            told = self._explain(exc)
            self.state.update(status="failed", error=f"{type(told).__name__}: {told}")
            self.link.stop_all(f"the run failed: {told}")
            if told is exc:
                raise
            raise told from None
        finally:
            self._finish()
        return self.writer.summary_path

    def _join(self, device: torch.device) -> None:
        config, link = self.config, self.link
        link.timeout = config.join_timeout  # joining and the handshake (clients load their data) may be slow
        if self.spec.distributed:
            accept_clients(link, config, self.first)
        mark("clients joined")
        link.accepting = False
        self.role = role = self.spec.server(config, device)
        mark("model built")
        ckpt = self.checkpoint
        role.resume = {k: v for k, v in ckpt.items() if k not in ("round", "config")} if ckpt else None
        clients = self.clients = Clients(link)
        # the data handshake: every client describes its data; the role sets up; each ready is acked
        ready = {peer: msg.meta for peer, msg in clients.gather("ready").items()}
        reported = data_reports(ready)  # the runtime's own part of ready; the role gets the rest
        ready = {peer: {k: v for k, v in meta.items() if k != DATA_REPORT} for peer, meta in ready.items()}
        mark("clients ready")
        facts = role.setup(clients, ready)
        self.members = Membership(config, link, clients, _version())
        first = self.members.plan(self.first)
        clients.reply_all(lambda peer: _ack(role.start(peer), train=peer in first))
        facts.update(role.prepare(clients))
        if self.spec.uses_model and "input_shape" in facts:  # what --model auto (or a name) built
            facts["architecture"] = architecture(config.model, tuple(facts["input_shape"]))
        follow_recipe(role, config)
        link.timeout = config.timeout  # from here on, silence means a lost peer
        self.sent_before = (link.stats.bytes_received, link.stats.bytes_sent)
        record = {**config.to_dict(), **facts, **reported_data(config, reported), "address": link.transport.address}
        self.writer.write_config({**record, "versions": versions()})

    def _round(self, rnd: int) -> bool:
        """Train, validate (with --val-fraction), test and record round ``rnd``; True if the run ends here."""
        config, link, writer, role = self.config, self.link, self.writer, self.role
        link.round = rnd
        t0 = time.monotonic()
        if rnd == self.first:
            mark("round 1 starts")
        lr = start_round(role, config, rnd)
        self.members.begin(rnd, role)
        train = role.train_round(self.clients, rnd)
        trained = time.monotonic() - t0
        self.members.sync_idle(role)
        val = self._validate(rnd) if config.val_fraction else None
        test = role.evaluate(self.clients, rnd)  # returns once every client sent eval_done, which we answer
        row = {**_metrics_row(rnd, train, test, time.monotonic() - t0, link, self.sent_before), "lr": lr}
        row["train_seconds"] = trained
        row.update(self.members.record())
        if val is not None:
            row.update(val_loss=val.tally.loss, val_accuracy=val.tally.accuracy)
        self.sent_before = (link.stats.bytes_received, link.stats.bytes_sent)
        with signals_after():  # a Ctrl-C here would leave metrics.jsonl a round ahead of summary.json
            writer.append_metrics(row)
            self.state.update(rounds_done=rnd, last_test=test, last_train=train)
            improved = val is not None and self._track_best(rnd, row)
            stop = rnd == config.epochs or self._stops_early(rnd)
            summary = self._summary()
            writer.write_summary(summary)
        keep = bool(config.checkpoint_every) and (rnd % config.checkpoint_every == 0 or stop)
        if improved or keep:
            state = {"round": rnd, "config": config.to_dict(), **role.checkpoint()}
            if improved:
                writer.write_checkpoint({**state, "val_accuracy": row["val_accuracy"]}, "best.pt")
            if keep:
                writer.write_checkpoint(state)
        self.members.next_round(role, rnd, stop)  # joiners come in; the next round's clients are chosen
        for peer in list(link.clients):  # clients keep their own state of the rounds we checkpoint
            answer = Message("done", meta={"checkpoint": keep}) if stop else None
            self.clients.reply(peer, answer or self.members.answer(peer, {"checkpoint": keep}, role))
        self.bar.update(rnd, progress_figures(row, summary))
        return stop

    def _validate(self, rnd: int) -> Any:
        """The validation pass: every client evaluates its validation rows; their eval_done get an ack."""
        role = self.role
        role.eval_split = "val"
        try:
            val = role.evaluate(self.clients, rnd)
        finally:
            role.eval_split = "test"
        self.clients.reply_all(Message("ack"))
        return val

    def _track_best(self, rnd: int, row: dict[str, Any]) -> bool:
        """True when this round's validation accuracy beats every earlier one (ties keep the earlier)."""
        best = self.state.get("best")
        if best is not None and row["val_accuracy"] <= best["val_accuracy"]:
            return False
        self.state["best"] = {"round": rnd, "val_accuracy": row["val_accuracy"], "test_accuracy": row["test_accuracy"]}
        return True

    def _stops_early(self, rnd: int) -> bool:
        best = self.state.get("best")
        if not self.config.early_stop or best is None or rnd - best["round"] < self.config.early_stop:
            return False
        self.state["stopped_early_after_round"] = rnd
        log.info(
            "no better validation accuracy for %d round(s) after round %d: stopping", rnd - best["round"], best["round"]
        )
        return True

    def _explain(self, exc: BaseException) -> BaseException:
        """A diverged loss, wherever it was seen, becomes one error that says what to do."""
        text = exc.detail if isinstance(exc, RemoteError) else str(exc)
        where = f"{exc.peer} reported" if isinstance(exc, RemoteError) else "the server found"
        if not isinstance(exc, DivergedError) and not (isinstance(exc, RemoteError) and "DivergedError" in text):
            return exc
        rnd = self.link.round or self.first
        last = next((r["train_loss"] for r in reversed(self.writer.rows) if r["train_loss"] is not None), None)
        kept = self.writer.out / "checkpoint.pt"
        return DivergedError(
            f"training diverged in round {rnd}: {where} {text.removeprefix('DivergedError: ')}. "
            + (f"The last finite training loss was {last:.4g}. " if last is not None else "")
            + f"Try a lower --lr (this run used {self.config.lr:g})"
            + (f"; the checkpoint of the last good round is kept in {kept}" if kept.exists() else "")
        )

    def _finish(self) -> None:
        self.bar.close()
        _hold_signals()  # a second Ctrl-C must not cut the final summary short
        self.writer.write_summary(self._summary())
        if self.role is not None:
            last = self.state.get("last_test")
            try:
                confusion = last.tally.confusion if last else None
                self.writer.write_plots(self.role.classes, confusion, self.writer.recorded_config())
            except Exception as exc:  # plots must never hide the real outcome
                log.warning("could not draw plots: %s", exc)
        self.writer.close()
        self.link.close()

    def _summary(self) -> dict[str, Any]:
        return _summary(self.config, self.role, self.state, self.writer, self.link, self.started)


def load_checkpoint(out: Path, config: RunConfig, spec: Any) -> dict[str, Any]:
    """The checkpoint a resumed run continues from, checked against the run's settings."""
    path = out / "checkpoint.pt"
    if not spec.server.resumable:
        raise ConfigError(f"{config.protocol} runs cannot resume: part of the model stays with the clients")
    if not path.exists():
        raise ConfigError(f"{path} does not exist: nothing to resume (was --checkpoint-every 0?)")
    checkpoint = torch.load(path, weights_only=True)  # our own file, and weights only all the same
    if checkpoint["config"]["protocol"] != config.protocol:
        raise ConfigError(f"{path} is a {checkpoint['config']['protocol']} checkpoint, not {config.protocol}")
    old, new = checkpoint["config"], config.to_dict()
    # options left to their defaults are recorded resolved since the protocols declare them; older runs left them out
    old, new = ({**c, "options": spec.option_values(c.get("options") or {})} for c in (old, new))
    # a setting left to its default (None: the cut) is recorded resolved in config.json, so it may come back set
    changed = [k for k in TRAINING_FIELDS if k not in RESUME_MAY_CHANGE and old.get(k) not in (None, new[k])]
    if changed:
        trained = {k: old.get(k) for k in changed}
        raise ConfigError(
            f"{path} was trained with {trained}; a resumed run keeps its settings: "
            f"pass --config {out / 'config.json'} (only --epochs may change)"
        )
    if checkpoint["round"] >= config.epochs:
        raise ConfigError(f"{out} already has {checkpoint['round']} round(s); pass a larger --epochs to train further")
    return checkpoint


@contextlib.contextmanager
def signals_after() -> Iterator[None]:
    """Hold SIGINT and SIGTERM until the block is done, then act on them as before: a round's records
    (its metrics row, the round count, the summary) are written together or not at all. Only the main
    thread receives signals, so elsewhere (parties run as threads) this does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held: list[int] = []
    kept = {sig: signal.signal(sig, lambda number, _: held.append(number)) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in kept.items():
            signal.signal(sig, handler)
        for sig in dict.fromkeys(held):
            signal.raise_signal(sig)  # through the handler it was held from


def _hold_signals() -> None:
    """From here on the process only finishes writing; further SIGINT/SIGTERM are ignored."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)


def _metrics_row(
    rnd: int, train: Any, test: Any, seconds: float, link: ServerLink, before: tuple[int, int]
) -> dict[str, Any]:
    s = link.stats
    return {
        "round": rnd,
        "train_loss": train.tally.loss,
        "train_accuracy": train.tally.accuracy,
        "test_loss": test.tally.loss,
        "test_accuracy": test.tally.accuracy,
        "test_macro_f1": test.tally.macro_f1,
        "wall_seconds": seconds,
        # this round, from the clients' side: "sent" is what all clients uploaded, "received" what they downloaded
        "bytes_sent": s.bytes_received - before[0],
        "bytes_received": s.bytes_sent - before[1],
        **{f"train_{k}": v for k, v in train.extra.items()},
    }


def data_reports(ready: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """What each client reported about its data: its own settings (source, split) and its rows and classes."""
    counts = ("n_train", "n_test", "classes")
    return {
        peer: {**(meta.get(DATA_REPORT) or {}), **{k: meta[k] for k in counts if k in meta}}
        for peer, meta in ready.items()
    }


def reported_data(config: RunConfig, reported: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """config.json's ``data`` as the clients hold it (not the server's own default), and each one's report."""
    if not reported:  # no clients (centralized): the server's own --data is the data
        return {}
    sources = sorted({str(r.get("source")) for r in reported.values()})
    data = sources[0] if len(sources) == 1 else "per client (see data_by_client)"
    return {"data": data, "data_by_client": reported}


def round_seconds(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The run's seconds per round, defined once for the bar, the final line and summary.json.

    ``seconds_per_round``: the mean wall time of a round, from its start to its test results
    (training, validation and evaluation; not the start-up before round 1).
    ``train_seconds_per_round``: the mean time of the training part alone.
    ``seconds_per_epoch`` is the same figure as ``seconds_per_round`` (an epoch is a round), kept for older readers.
    """
    if not rows:
        return {"seconds_per_round": None, "train_seconds_per_round": None, "seconds_per_epoch": None}
    per_round = sum(r["wall_seconds"] for r in rows) / len(rows)
    timed = [r["train_seconds"] for r in rows if "train_seconds" in r]  # rows of older runs lack it
    training = sum(timed) / len(timed) if timed else None
    return {"seconds_per_round": per_round, "train_seconds_per_round": training, "seconds_per_epoch": per_round}


def progress_figures(row: dict[str, Any], summary: dict[str, Any]) -> dict[str, Any]:
    """What the bar (or plain line) shows after a round: the round's figures and the run's seconds per round."""
    figures = {k: row[k] for k in ("train_loss", "train_accuracy", "test_loss", "test_accuracy", "test_macro_f1")}
    return {**figures, "s/round": f"{summary['seconds_per_round']:.2f}"}


def _best_fields(state: dict[str, Any]) -> dict[str, Any]:
    """With --val-fraction: the round chosen by validation accuracy, and its test accuracy (kept in best.pt)."""
    best = state.get("best")
    if best is None:
        return {}
    fields = {
        "best_round": best["round"],
        "best_val_accuracy": best["val_accuracy"],
        "test_accuracy_at_best": best["test_accuracy"],
    }
    if "stopped_early_after_round" in state:
        fields["stopped_early_after_round"] = state["stopped_early_after_round"]
    return fields


def _role_summary(role: Any) -> dict[str, Any]:
    """The protocol's own summary fields; a role that failed half-way through setup may have none."""
    if role is None:
        return {}
    try:
        return role.summary()
    except Exception as exc:  # the summary must be written, whatever the role's state
        log.warning("the protocol's summary fields are missing: %s", exc)
        return {}


def _summary(
    config: RunConfig, role: Any, state: dict[str, Any], writer: RunWriter, link: ServerLink, started: float
) -> dict[str, Any]:
    rows = writer.rows
    test, train = state.get("last_test"), state.get("last_train")
    prior = state.get("prior", {"bytes_sent": 0, "bytes_received": 0, "wall_seconds": 0.0})
    wall = time.monotonic() - started + prior["wall_seconds"]
    return {
        "protocol": config.protocol,
        "clients": config.clients,
        "epochs": config.epochs,
        "rounds_done": state["rounds_done"],
        "status": state["status"],
        **({"error": state["error"]} if "error" in state else {}),
        "test_accuracy": test.tally.accuracy if test else None,
        "test_macro_f1": test.tally.macro_f1 if test else None,
        "test_loss": test.tally.loss if test else None,
        "train_accuracy": train.tally.accuracy if train else None,
        "train_loss": train.tally.loss if train else None,
        "best_test_accuracy": max((r["test_accuracy"] for r in rows), default=None),
        **_best_fields(state),
        "wall_seconds": wall,
        **round_seconds(rows),
        "bytes_sent": link.stats.bytes_received + prior["bytes_sent"],
        "bytes_received": link.stats.bytes_sent + prior["bytes_received"],
        **({"resumed_after_round": state["resumed_after_round"]} if "resumed_after_round" in state else {}),
        "tensor_bytes_sent": link.stats.tensor_bytes_received,
        "tensor_bytes_received": link.stats.tensor_bytes_sent,
        "messages_rejected": link.stats.rejected,
        "bytes_by_client": {p: {"sent": v["received"], "received": v["sent"]} for p, v in link.stats.by_peer.items()},
        "messages_repeated": link.stats.duplicates,
        "classes": role.classes if role is not None else [],
        "versions": versions(),
        "confusion": test.tally.confusion if test else None,
        **_role_summary(role),
    }
