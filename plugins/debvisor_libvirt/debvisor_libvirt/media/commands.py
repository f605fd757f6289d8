"""`debvisor hv iso …` and `debvisor hv convert …`: VM provisioning media.

Only click and light core modules are imported here; pycdlib, PyYAML, jsonschema
and the media modules load inside the commands.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path
from typing import Any

import click

from debvisor_core import log
from debvisor_core.commands import get_ctx, json_option, pass_ctx
from debvisor_core.context import Context
from debvisor_core.errors import BadInput, DebvisorError

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


mode_option = click.option("--mode", "mode_text", metavar="OCTAL",
                           help="Permission bits of the files written (default 0600, owner only; "
                           "e.g. 0644). Group or others never get write access.")


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


def _set_dry_run(c: click.Context, _p: click.Parameter, value: bool) -> None:
    if value:
        get_ctx(c).op_options.dry_run = True


dry_run_option = click.option("--dry-run", is_flag=True, expose_value=False, callback=_set_dry_run,
                              help="Validate and show what would be written; write nothing.")


@click.group("iso")
def iso() -> None:
    """Validated cloud-init NoCloud seed ISOs (label cidata, ISO 9660 + Joliet + Rock Ridge).

    \b
    Example:
      debvisor hv iso build -o seed.iso --user-data user-data.yaml --hostname web1 --instance-id web1
      debvisor hv iso templates
      debvisor hv iso show seed.iso
    """


@iso.command("build")
@click.option("-o", "--output", type=click.Path(dir_okay=True),
              help="The ISO to write (with --batch: the output directory).")
@click.option("--user-data", type=click.Path(dir_okay=False), help="user-data file (#cloud-config, "
              "#! script, #include or MIME multipart).")
@click.option("--meta-data", type=click.Path(dir_okay=False), help="meta-data file (needs instance-id).")
@click.option("--hostname", help="Generate meta-data with this local-hostname.")
@click.option("--instance-id", help="Generate meta-data with this instance-id (default iid-HOSTNAME).")
@click.option("--network-config", type=click.Path(dir_okay=False), help="network-config v1 or v2 file.")
@click.option("--vendor-data", type=click.Path(dir_okay=False), help="vendor-data file.")
@click.option("--template", help="Render user-data from the template library (hv iso templates).")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
              help="A template variable (repeatable); not for secret ones (see --set-file).")
@click.option("--set-file", "set_files", multiple=True, metavar="KEY=PATH",
              help="A template variable read from an owner-only file, - for stdin (repeatable); "
              "the only way to give a secret variable such as join_token.")
@click.option("--ssh-key", "ssh_keys", multiple=True, type=click.Path(dir_okay=False),
              help="SSH public key file for the default user (meta-data public-keys; repeatable).")
@click.option("--batch", type=click.Path(dir_okay=False), help="CSV or YAML file, one row per VM.")
@click.option("--strict", is_flag=True, help="Unknown keys (which cloud-init ignores) are errors.")
@click.option("--warn-size", help="Warn above this seed size (default 1M or [hv] iso_warn_size).")
@click.option("--force", is_flag=True, help="Replace an existing output file.")
@mode_option
@dry_run_option
@json_option
@pass_ctx
def build(ctx: Context, output: str | None, user_data: str | None, meta_data: str | None,
          hostname: str | None, instance_id: str | None, network_config: str | None,
          vendor_data: str | None, template: str | None, sets: tuple[str, ...],
          set_files: tuple[str, ...], ssh_keys: tuple[str, ...], batch: str | None, strict: bool,
          warn_size: str | None, force: bool, mode_text: str | None) -> None:
    """Build a NoCloud seed ISO in-process (pycdlib), after validating every file.

    Nothing is written when any file has an error: YAML syntax (file:line),
    user-data against cloud-init's JSON schema, network-config v1/v2 against
    DebVisor's schema, meta-data without instance-id, the size limits. The ISO is
    written under a temporary name and renamed.

    \b
    Example:
      debvisor hv iso build -o web1.iso --user-data ud.yaml --hostname web1 \\
          --network-config net.yaml --ssh-key ~/.ssh/id_ed25519.pub
      debvisor hv iso build -o w1.iso --template k8s-worker --hostname w1 \\
          --set join_endpoint=10.0.0.1:6443 --set-file join_token=token.txt \\
          --set ca_cert_hash=sha256:<64 hex digits>
      debvisor hv iso build --batch vms.csv -o seeds/ --strict
      debvisor hv iso build -o web1.iso --user-data ud.yaml --instance-id web1 --dry-run --json
    """
    from .seed import DEFAULT_WARN, SeedSpec

    configured = ctx.section("hv").get("iso_warn_size", DEFAULT_WARN)
    if not warn_size and (not isinstance(configured, str | int) or isinstance(configured, bool)):
        raise BadInput(f"config {ctx.config.path}: [hv] iso_warn_size must be a size like 1M, "
                       f"not {configured!r}")
    limit = parse_size(warn_size or configured)
    mode = parse_mode(mode_text)
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
        for key, value in read_set_files(set_files).items():
            if key in values:
                raise BadInput(f"{key} is given with both --set and --set-file")
            values[key] = value
        seeds = [SeedSpec(output=output, user_data=user_data, meta_data=meta_data, hostname=hostname,
                          instance_id=instance_id, network_config=network_config,
                          vendor_data=vendor_data, template=template, sets=values,
                          ssh_keys=list(ssh_keys))]
    _build_all(ctx, seeds, strict=strict, warn_size=limit, force=force, mode=mode)


def _build_all(ctx: Context, seeds: list[Any], *, strict: bool, warn_size: int, force: bool,
               mode: int = 0o600) -> None:
    from .iso import write_iso
    from .report import Report
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
    data = {"ok": True, "dry_run": dry, "isos": results}

    def human(d: dict[str, Any]) -> None:
        verb = "would write" if dry else "wrote"
        for r in d["isos"]:
            parts = ", ".join(f"{f['name']} ({f['size']} B)" for f in r["files"])
            print(f"{verb} {r['output']} (label cidata): {parts}")

    ctx.emit(data, human)


@iso.command("templates")
@json_option
@pass_ctx
def templates_cmd(ctx: Context) -> None:
    """List the cloud-config template library and each template's variables.

    \b
    Example:
      debvisor hv iso templates
      debvisor hv iso templates --json
    """
    from . import templates

    data = [templates.describe(n) for n in templates.names()]

    def human(rows: list[dict[str, Any]]) -> None:
        for t in rows:
            print(f"{t['name']}: {t['description']}")
            for k, v in t["vars"].items():
                flag = "required" if v["required"] else f"default {v['default']!r}"
                if v["secret"]:
                    flag += ", secret: --set-file only"
                print(f"    {k:<16} {flag}; {v['help']}")

    ctx.emit(data, human)


@iso.command("show")
@click.argument("path", type=click.Path(dir_okay=False))
@json_option
@pass_ctx
def show(ctx: Context, path: str) -> None:
    """Print a seed ISO's volume label and each file inside (size, sha256, user-data kind).

    \b
    Example:
      debvisor hv iso show seed.iso
      debvisor hv iso show seed.iso --json
    """
    import hashlib

    from debvisor_core.output import table

    from .iso import read_iso
    from .validate import kind_of

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
    data = {"path": path, "label": info["label"], "joliet": info["joliet"],
            "rock_ridge": info["rock_ridge"], "files": files}

    def human(d: dict[str, Any]) -> None:
        ext = " + ".join(["ISO 9660"] + (["Joliet"] if d["joliet"] else [])
                         + (["Rock Ridge"] if d["rock_ridge"] else []))
        print(f"label: {d['label']}  ({ext})")
        if d["label"] != "cidata":
            log.warn("the label is not cidata: cloud-init's NoCloud will not find this seed")
        print(table(d["files"], [("name", "FILE"), ("size", "BYTES"), ("kind", "KIND"),
                                 ("sha256", "SHA256")]))

    ctx.emit(data, human)


@click.command("convert")
@click.argument("src", type=click.Path())
@click.argument("dst", type=click.Path())
@click.option("-O", "fmt", type=click.Choice(["qcow2", "raw", "vmdk", "vdi", "vhdx"]),
              help="Output format (default: the source's).")
@click.option("-f", "--source-format", "src_fmt", type=click.Choice(["qcow2", "raw", "vmdk", "vdi", "vhdx"]),
              help="Source format, passed to QEMU as is (default: raw for a *.raw file, else "
              "detected by qemu-img info).")
@click.option("--allow-backing", is_flag=True,
              help="Also convert a source that reads other files (a backing file, an external "
              "data file, vmdk extents); the chain is shown. Pseudo-protocols (json:, nbd:, …) "
              "are refused even so.")
@click.option("--compress", is_flag=True, help="Compressed qcow2 clusters.")
@click.option("--checksum", type=click.Choice(["blake3", "sha256-tree", "sha256"]), default="blake3",
              show_default=True, help="Checksum of the guest-visible content, verified and stored in "
              "DST.CHECKSUM: blake3 (of the whole raw byte stream, like `b3sum` of a raw export; "
              "fastest), sha256-tree (sha256 over the sha256 of each 1 MiB block: parallel, holes "
              "are free) or sha256 (of the whole raw byte stream, like `sha256sum` of a raw export).")
@click.option("--resume", is_flag=True, help="Continue an interrupted conversion from its checkpoint.")
@click.option("--force", is_flag=True, help="Replace DST if it exists.")
@click.option("--segment", "segment_mib", type=int, default=256, show_default=True,
              help="Largest checkpoint interval in MiB (a resume redoes at most two); the first "
              "and last segments are smaller.")
@click.option("--cache", type=click.Choice(["none", "directsync", "writeback", "unsafe"]),
              default="none", show_default=True,
              help="Target cache: none or directsync (O_DIRECT, like `qemu-img convert -t none`; "
              "the read-back comes from the disk), writeback (page cache, one fdatasync per "
              "checkpoint; the read-back comes from the page cache), unsafe (no syncs; scratch).")
@click.option("--aio", type=click.Choice(["threads", "native", "io_uring"]), default="threads",
              show_default=True, help="Target AIO mode (QEMU aio=).")
@mode_option
@dry_run_option
@json_option
@pass_ctx
def convert(ctx: Context, src: str, dst: str, fmt: str | None, src_fmt: str | None,
            allow_backing: bool, compress: bool, checksum: str, resume: bool, force: bool,
            segment_mib: int, cache: str, aio: str, mode_text: str | None) -> None:
    """Convert a disk image with a verified checksum; resumable after SIGKILL or Ctrl-C.

    The source format is -f, raw for a *.raw file, else detected by `qemu-img info`;
    a source that reads other files (backing file, data file) needs --allow-backing.
    Results and checksum files are 0600 unless --mode. qemu-img copies one
    segment at a time (holes skipped); each segment is read back from the target,
    hashed and checkpointed, so `--resume` continues where the copy stopped. The
    checksum of the guest-visible content of source and result must match; it is
    stored in DST.blake3 (or DST.sha256-tree, DST.sha256). DST appears only when
    verified.

    \b
    Example:
      debvisor hv convert disk.raw disk.qcow2 -O qcow2 --compress
      debvisor hv convert big.vmdk big.qcow2 -O qcow2 --resume
      debvisor hv convert disk.qcow2 disk.raw -O raw --checksum sha256 --force --json
    """
    from .convert import convert as run_convert
    from .convert import plan_dict, prepare

    plan = prepare(src, dst, fmt, compress=compress, force=force, resume=resume, checksum=checksum,
                   segment_mib=segment_mib, cache=cache, aio=aio, src_fmt=src_fmt,
                   allow_backing=allow_backing, mode=parse_mode(mode_text))
    if ctx.op_options.dry_run:
        ctx.emit({"dry_run": True, "plan": plan_dict(plan)},
                 lambda d: print(f"would convert {src} ({plan.src_format}, {plan.size} bytes) to {dst} "
                                 f"({plan.fmt}{', compressed' if compress else ''}) via {plan.tmp}"))
        return
    try:
        result = run_convert(plan)
    except DebvisorError as exc:
        ctx.audit("failed", action="convert", source=src, destination=dst, error=exc.message)
        raise
    except KeyboardInterrupt:
        ctx.audit("interrupted", action="convert", source=src, destination=dst)
        raise
    ctx.audit("ok", action="convert", source=src, destination=dst, format=plan.fmt,
              source_format=plan.src_format, reads=[c["file"] for c in plan.chain],
              checksum=checksum, digest=result[checksum], resumed_from=result["resumed_from"])
    ctx.emit(result, lambda r: print(
        f"converted {src} -> {dst} ({r['format']}), {checksum} of the guest-visible content "
        f"{r[checksum]} verified, stored in {r['checksum_file']}"))
