"""`debvisor hv iso …` and `debvisor hv convert …`: VM provisioning media, declared as
actions (hv.iso.build, hv.iso.templates, hv.iso.show, hv.convert; cli.py attaches them).

Only light core modules are imported here; pycdlib, PyYAML, jsonschema and the media
modules load inside the functions, when an action runs.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from debvisor_core import log
from debvisor_core.actions import Action, Param
from debvisor_core.errors import BadInput, DebvisorError

if TYPE_CHECKING:  # pragma: no cover
    from debvisor_core.context import Context

_SIZE_RE = re.compile(r"^(\d+)\s*([KMG]i?B?)?$", re.IGNORECASE)


def parse_size(text: str | int) -> int:
    """`512K`, `1M`, `1MiB`, `2048` → bytes."""
    if isinstance(text, int):
        return text
    m = _SIZE_RE.match(text.strip())
    if not m:
        raise BadInput(f"{text!r} is not a size like 512K, 1M or 1048576")
    mult = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}[(m.group(2) or "")[:1].lower()]
    return int(m.group(1)) * mult


_MODE_RE = re.compile(r"^0?o?[0-7]{3}$")


def parse_mode(text: str | None) -> int:
    """`--mode 0644` → 0o644 (default 0600). Group or others may read, never write."""
    if text is None:
        return 0o600
    if not _MODE_RE.match(text.strip()):
        raise BadInput(f"--mode {text!r} is not an octal file mode like 0600 or 0640")
    mode = int(text.strip().replace("o", ""), 8)
    if mode & 0o022:
        raise BadInput(f"--mode {text} lets group or others write the file; use at most 0644")
    if (mode & 0o600) != 0o600:
        raise BadInput(f"--mode {text} must keep owner read and write (0600 or more)")
    return mode


def read_set_files(items: tuple[str, ...]) -> dict[str, str]:
    """`--set-file KEY=PATH`: the value from an owner-only file (`-`: stdin), one trailing
    newline dropped. Secrets given so stay out of argv, the audit log and `ps`."""
    import sys

    from debvisor_core.secrets import read_secret

    values: dict[str, str] = {}
    stdin_used = False
    for item in items:
        key, eq, path = item.partition("=")
        if not eq or not key or not path:
            raise BadInput(f"--set-file {item!r} is not KEY=PATH (PATH - reads stdin)")
        if key in values:
            raise BadInput(f"--set-file {key} is given twice")
        if path == "-":
            if stdin_used:
                raise BadInput("only one --set-file can read stdin (-)")
            stdin_used = True
            raw = sys.stdin.buffer.read()
        else:
            raw = read_secret(path, f"--set-file {key} file")
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise BadInput(f"--set-file {key}: the value is not UTF-8 text") from None
        text = text[:-1] if text.endswith("\n") else text
        text = text[:-1] if text.endswith("\r") else text
        if not text:
            raise BadInput(f"--set-file {key}: the value is empty")
        values[key] = text
    return values


def execute_iso_build(ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
    """Validate every file, then write the ISO(s); nothing is written when one has an
    error. Audited (no journalled operation: a new ISO is removed if a later one fails)."""
    from ..actions import not_a_dir
    from .seed import DEFAULT_WARN, SeedSpec

    output, batch, template = params["output"], params["batch"], params["template"]
    user_data, meta_data = params["user_data"], params["meta_data"]
    hostname, instance_id = params["hostname"], params["instance_id"]
    network_config, vendor_data = params["network_config"], params["vendor_data"]
    sets, set_files = params["set"] or [], params["set_file"] or []
    ssh_keys = params["ssh_key"] or []
    for option, value in (("--user-data", user_data), ("--meta-data", meta_data),
                          ("--network-config", network_config),
                          ("--vendor-data", vendor_data), ("--batch", batch),
                          *(("--ssh-key", k) for k in ssh_keys)):
        not_a_dir(option, value)
    if params["dry_run"]:
        ctx.op_options.dry_run = True
    warn_size = params["warn_size"]
    configured = ctx.section("hv").get("iso_warn_size", DEFAULT_WARN)
    if not warn_size and (not isinstance(configured, str | int) or isinstance(configured, bool)):
        raise BadInput(f"config {ctx.config.path}: [hv] iso_warn_size must be a size like 1M, "
                       f"not {configured!r}")
    limit = parse_size(warn_size or configured)
    mode = parse_mode(params["mode"])
    if batch:
        from .batch import specs

        if any((user_data, meta_data, hostname, instance_id, network_config, vendor_data, template,
                sets, set_files, ssh_keys)):
            raise BadInput("--batch takes everything from the batch file: drop the per-VM options")
        out_dir = Path(output) if output else Path(batch).parent
        if not out_dir.is_dir():
            raise BadInput(f"output directory {out_dir} does not exist")
        seeds = specs(Path(batch), out_dir)
    else:
        if not output:
            raise BadInput("give -o/--output FILE.iso")
        if os.path.isdir(output):
            raise BadInput(f"-o {output} is a directory: give the ISO file name, "
                           f"e.g. {os.path.join(output, 'seed.iso')}")
        secret: set[str] = set()
        if template and (sets or set_files):
            from .templates import secret_vars

            secret = secret_vars(template)
        values = {}
        for item in sets:
            key, eq, value = item.partition("=")
            if not eq or not key:
                raise BadInput("--set takes KEY=VALUE" + ("" if eq else f", not {item!r}"))
            if key in secret:
                raise BadInput(f"{key} is a secret: give it with --set-file {key}=FILE (an owner-only "
                               "file, or - for stdin), not on the command line")
            values[key] = value
        for key, value in read_set_files(tuple(set_files)).items():
            if key in values:
                raise BadInput(f"{key} is given with both --set and --set-file")
            values[key] = value
        seeds = [SeedSpec(output=output, user_data=user_data, meta_data=meta_data, hostname=hostname,
                          instance_id=instance_id, network_config=network_config,
                          vendor_data=vendor_data, template=template, sets=values,
                          ssh_keys=list(ssh_keys))]
    return _build_all(ctx, seeds, strict=params["strict"], warn_size=limit,
                      force=params["force"], mode=mode)


def _build_all(ctx: Context, seeds: list[Any], *, strict: bool, warn_size: int, force: bool,
               mode: int = 0o600) -> dict[str, Any]:
    from debvisor_core.netconfig import Report

    from .iso import write_iso
    from .seed import assemble, check_size, describe_files

    started = time.monotonic()
    planned: list[tuple[Any, dict[str, bytes], Any]] = []
    all_errors: list[Any] = []
    for spec in seeds:
        report = Report(strict=strict)
        files = assemble(spec, report)
        check_size(files, warn_size, report, spec.output)
        out = Path(spec.output)
        if out.is_dir():
            report.error(spec.output, "is a directory; give the ISO file name")
        elif not out.parent.is_dir():
            report.error(spec.output, f"the directory {out.parent} does not exist")
        elif os.path.lexists(out) and not force:
            report.error(spec.output, "already exists: pass --force to replace it")
        for issue in report.warnings:
            log.warn(str(issue))
        all_errors += report.errors
        planned.append((spec, files, report))
    if all_errors:
        for issue in all_errors:
            log.error(str(issue))
        if ctx.json:
            ctx.emit({"ok": False, "errors": [i.to_dict() for i in all_errors]})
        raise BadInput(f"{len(all_errors)} error(s) found: no ISO was written")

    results = [{"output": s.output, "label": "cidata", "files": describe_files(f),
                "warnings": [i.to_dict() for i in r.warnings]} for s, f, r in planned]
    dry = ctx.op_options.dry_run
    if not dry:
        created: list[str] = []
        try:
            for spec, files, _ in planned:
                existed = os.path.lexists(spec.output)
                write_iso(files, spec.output, mode=mode)
                if not existed:
                    created.append(spec.output)
        except BaseException:
            for path in created:  # nothing half-applied: drop this run's new ISOs
                Path(path).unlink(missing_ok=True)
            raise
        ctx.audit("ok", action="iso-build", outputs=[r["output"] for r in results],
                  files={r["output"]: {f["name"]: f["sha256"] for f in r["files"]} for r in results},
                  duration_ms=int(1000 * (time.monotonic() - started)))
    return {"ok": True, "dry_run": dry, "isos": results}


def render_iso_build(d: dict[str, Any]) -> None:
    verb = "would write" if d["dry_run"] else "wrote"
    for r in d["isos"]:
        parts = ", ".join(f"{f['name']} ({f['size']} B)" for f in r["files"])
        print(f"{verb} {r['output']} (label cidata): {parts}")


def query_iso_templates(ctx: Context, params: dict[str, Any]) -> list[dict[str, Any]]:
    from . import templates

    return [templates.describe(n) for n in templates.names()]


def render_iso_templates(rows: list[dict[str, Any]]) -> None:
    for t in rows:
        print(f"{t['name']}: {t['description']}")
        for k, v in t["vars"].items():
            flag = "required" if v["required"] else f"default {v['default']!r}"
            if v["secret"]:
                flag += ", secret: --set-file only"
            print(f"    {k:<16} {flag}; {v['help']}")


def query_iso_show(ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
    import hashlib

    from ..actions import not_a_dir
    from .iso import read_iso
    from .validate import kind_of

    path = params["path"]
    not_a_dir("PATH", path)
    if not os.path.isfile(path):
        raise BadInput(f"{path} does not exist")
    info = read_iso(path)
    files = []
    for f in info["files"]:
        row = {"name": f["name"], "iso_name": f["iso_name"], "size": len(f["data"]),
               "sha256": hashlib.sha256(f["data"]).hexdigest()}
        if f["name"] in ("user-data", "vendor-data"):
            row["kind"] = kind_of(f["data"].decode("utf-8", "replace"))
        files.append(row)
    return {"path": path, "label": info["label"], "joliet": info["joliet"],
            "rock_ridge": info["rock_ridge"], "files": files}


def render_iso_show(d: dict[str, Any]) -> None:
    from debvisor_core.output import table

    ext = " + ".join(["ISO 9660"] + (["Joliet"] if d["joliet"] else [])
                     + (["Rock Ridge"] if d["rock_ridge"] else []))
    print(f"label: {d['label']}  ({ext})")
    if d["label"] != "cidata":
        log.warn("the label is not cidata: cloud-init's NoCloud will not find this seed")
    print(table(d["files"], [("name", "FILE"), ("size", "BYTES"), ("kind", "KIND"),
                             ("sha256", "SHA256")]))


def execute_convert(ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
    """Convert (or, with --dry-run, plan the conversion); audited: ok, failed, interrupted."""
    from ..actions import Shown
    from .convert import convert as run_convert
    from .convert import plan_dict, prepare

    src, dst, checksum = params["src"], params["dst"], params["checksum"]
    compress = params["compress"]
    plan = prepare(src, dst, params["output_format"], compress=compress, force=params["force"],
                   resume=params["resume"], checksum=checksum, segment_mib=params["segment"],
                   cache=params["cache"], aio=params["aio"], src_fmt=params["source_format"],
                   allow_backing=params["allow_backing"], mode=parse_mode(params["mode"]))
    if params["dry_run"] or ctx.op_options.dry_run:
        ctx.op_options.dry_run = True
        return Shown({"dry_run": True, "plan": plan_dict(plan)},
                     f"would convert {src} ({plan.src_format}, {plan.size} bytes) to {dst} "
                     f"({plan.fmt}{', compressed' if compress else ''}) via {plan.tmp}")
    try:
        result: dict[str, Any] = run_convert(plan)
    except DebvisorError as exc:
        ctx.audit("failed", action="convert", source=src, destination=dst, error=exc.message)
        raise
    except KeyboardInterrupt:
        ctx.audit("interrupted", action="convert", source=src, destination=dst)
        raise
    ctx.audit("ok", action="convert", source=src, destination=dst, format=plan.fmt,
              source_format=plan.src_format, reads=[c["file"] for c in plan.chain],
              checksum=checksum, digest=result[checksum], resumed_from=result["resumed_from"])
    return Shown(result, f"converted {src} -> {dst} ({result['format']}), {checksum} of the "
                         f"guest-visible content {result[checksum]} verified, stored in "
                         f"{result['checksum_file']}")


def _print_text(data: Any) -> None:
    text = getattr(data, "text", None)
    if text:
        print(text)


# -- the declarations ------------------------------------------------------------------
_MODE = Param("mode", "Permission bits of the files written (default 0600, owner only; e.g. "
                      "0644). Group or others never get write access.", default=None,
              metavar="OCTAL")
_FORMATS = ("qcow2", "raw", "vmdk", "vdi", "vhdx")

MEDIA_ACTIONS: list[Action] = [
    Action(
        path="hv.iso.build", execute=execute_iso_build, render=render_iso_build,
        summary="Build a NoCloud seed ISO in-process (pycdlib), after validating every file",
        description=(
            "Nothing is written when any file has an error: YAML syntax (file:line), "
            "user-data against cloud-init's JSON schema, network-config v1/v2 against "
            "DebVisor's schema, meta-data without instance-id, the size limits. The ISO is "
            "written under a temporary name and renamed."),
        params=(
            Param("output", "The ISO to write (with --batch: the output directory).",
                  type="path", default=None, short="-o"),
            Param("user_data", "user-data file (#cloud-config, #! script, #include or MIME "
                               "multipart).", type="path", default=None),
            Param("meta_data", "meta-data file (needs instance-id).", type="path", default=None),
            Param("hostname", "Generate meta-data with this local-hostname.", default=None),
            Param("instance_id", "Generate meta-data with this instance-id (default "
                                 "iid-HOSTNAME).", default=None),
            Param("network_config", "network-config v1 or v2 file.", type="path", default=None),
            Param("vendor_data", "vendor-data file.", type="path", default=None),
            Param("template", "Render user-data from the template library (hv iso templates).",
                  default=None),
            Param("set", "A template variable (repeatable); not for secret ones (see "
                         "--set-file).", type="list", default=None, metavar="KEY=VALUE"),
            Param("set_file", "A template variable read from an owner-only file, - for stdin "
                              "(repeatable); the only way to give a secret variable such as "
                              "join_token.", type="list", default=None, metavar="KEY=PATH"),
            Param("ssh_key", "SSH public key file for the default user (meta-data "
                             "public-keys; repeatable).", type="list", default=None,
                  metavar="PATH"),
            Param("batch", "CSV or YAML file, one row per VM.", type="path", default=None),
            Param("strict", "Unknown keys (which cloud-init ignores) are errors.", type="bool",
                  default=False),
            Param("warn_size", "Warn above this seed size (default 1M or [hv] iso_warn_size).",
                  default=None),
            Param("force", "Replace an existing output file.", type="bool", default=False),
            _MODE,
            Param("dry_run", "Validate and show what would be written; write nothing.",
                  type="bool", default=False),
        ),
        result="an object: ok, dry_run, isos [{output, label, files [{name, size, sha256, "
               "...}], warnings [{file, line, message, ...}]}]",
        examples=(
            "debvisor hv iso build -o web1.iso --user-data ud.yaml --hostname web1 "
            "--network-config net.yaml --ssh-key ~/.ssh/id_ed25519.pub",
            "debvisor hv iso build -o w1.iso --template k8s-worker --hostname w1 "
            "--set join_endpoint=10.0.0.1:6443 --set-file join_token=token.txt "
            "--set ca_cert_hash=sha256:<64 hex digits>",
            "debvisor hv iso build --batch vms.csv -o seeds/ --strict",
            "debvisor hv iso build -o web1.iso --user-data ud.yaml --instance-id web1 "
            "--dry-run --json",
        ),
    ),
    Action(
        path="hv.iso.templates", query=query_iso_templates, render=render_iso_templates,
        privilege="none",
        summary="List the cloud-config template library and each template's variables",
        result="a list of {name, description, vars {NAME: {required, default, secret, help}}}",
        examples=("debvisor hv iso templates", "debvisor hv iso templates --json"),
    ),
    Action(
        path="hv.iso.show", query=query_iso_show, render=render_iso_show, privilege="none",
        summary="Print a seed ISO's volume label and each file inside (size, sha256, "
                "user-data kind)",
        params=(Param("path", "The seed ISO.", type="path", positional=True),),
        result="an object: path, label, joliet, rock_ridge, files [{name, iso_name, size, "
               "sha256, kind}]",
        examples=("debvisor hv iso show seed.iso", "debvisor hv iso show seed.iso --json"),
    ),
    Action(
        path="hv.convert", execute=execute_convert, render=_print_text,
        summary="Convert a disk image with a verified checksum; resumable after SIGKILL or "
                "Ctrl-C",
        description=(
            "The source format is -f, raw for a *.raw file, else detected by `qemu-img info`; "
            "a source that reads other files (backing file, data file) needs "
            "--allow-backing. Results and checksum files are 0600 unless --mode. qemu-img "
            "copies one segment at a time (holes skipped); each segment is read back from the "
            "target, hashed and checkpointed, so `--resume` continues where the copy stopped. "
            "The checksum of the guest-visible content of source and result must match; it "
            "is stored in DST.blake3 (or DST.sha256-tree, DST.sha256). DST appears only when "
            "verified."),
        params=(
            Param("src", "The source image.", type="path", positional=True),
            Param("dst", "The image to write.", type="path", positional=True),
            Param("output_format", "Output format (default: the source's).", type="choice",
                  choices=_FORMATS, default=None, short="-O"),
            Param("source_format", "Source format, passed to QEMU as is (default: raw for a "
                                   "*.raw file, else detected by qemu-img info).",
                  type="choice", choices=_FORMATS, default=None, short="-f"),
            Param("allow_backing", "Also convert a source that reads other files (a backing "
                                   "file, an external data file, vmdk extents); the chain is "
                                   "shown. Pseudo-protocols (json:, nbd:, …) are refused even "
                                   "so.", type="bool", default=False),
            Param("compress", "Compressed qcow2 clusters.", type="bool", default=False),
            Param("checksum", "Checksum of the guest-visible content, verified and stored in "
                              "DST.CHECKSUM: blake3 (of the whole raw byte stream, like `b3sum` "
                              "of a raw export; fastest), sha256-tree (sha256 over the sha256 "
                              "of each 1 MiB block: parallel, holes are free) or sha256 (of the "
                              "whole raw byte stream, like `sha256sum` of a raw export).",
                  type="choice", choices=("blake3", "sha256-tree", "sha256"), default="blake3"),
            Param("resume", "Continue an interrupted conversion from its checkpoint.",
                  type="bool", default=False),
            Param("force", "Replace DST if it exists.", type="bool", default=False),
            Param("segment", "Largest checkpoint interval in MiB (a resume redoes at most two); "
                             "the first and last segments are smaller.", type="int",
                  default=256),
            Param("cache", "Target cache: none or directsync (O_DIRECT, like `qemu-img convert "
                           "-t none`; the read-back comes from the disk), writeback (page "
                           "cache, one fdatasync per checkpoint; the read-back comes from the "
                           "page cache), unsafe (no syncs; scratch).", type="choice",
                  choices=("none", "directsync", "writeback", "unsafe"), default="none"),
            Param("aio", "Target AIO mode (QEMU aio=).", type="choice",
                  choices=("threads", "native", "io_uring"), default="threads"),
            _MODE,
            Param("dry_run", "Validate and show what would be written; write nothing.",
                  type="bool", default=False),
        ),
        result="an object: the converted image's format, the checksum (key: its algorithm), "
               "checksum_file, resumed_from, ...; with --dry-run {dry_run: true, plan}",
        examples=(
            "debvisor hv convert disk.raw disk.qcow2 -O qcow2 --compress",
            "debvisor hv convert big.vmdk big.qcow2 -O qcow2 --resume",
            "debvisor hv convert disk.qcow2 disk.raw -O raw --checksum sha256 --force --json",
        ),
    ),
]
