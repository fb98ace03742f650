"""VAE round trip of the embedded model, decoder against decoder (issue #17): PSNR, LPIPS, speckles.

    python benchmarks/vae_speckles.py [--before git:REV | --before DIR] [--after DIR] [--n 256]
        [--emoji-pack .carry/emoji_pack.npz] [--vgg] [--json OUT.json] [--picture OUT.webp] [--device cpu]

Both VAEs encode and decode the same ``--n`` held-out procedural scenes and ``--n`` emoji composites
(``EVAL_SEED``, never seen in training). Columns: PSNR of the decoded posterior mean (what an edit decodes)
and of a posterior sample (what the UNet's latents look like), LPIPS-Alex v0.1 (and VGG with ``--vgg``; the
decoder fine-tune trains on Alex, VGG is the independent check), and two outlier shares: ``speckle_share``,
pixels whose colour lies more than 0.2 (51/255) outside the source's local 5×5 colour range in some channel
(the rainbow dots), and ``tint_share``, the same beyond 0.1 (also whole objects decoded in a shifted colour).
Defaults: ``--before`` the VAE shipped before issue #17 (read from git), ``--after`` the shipped one, fp16
weights loaded in fp32. Prints a Markdown table; ``--json`` also writes the numbers, ``--picture`` the first 8
images of each set: rows source | before | after, procedural then emoji.
"""

from __future__ import annotations

import argparse
import subprocess
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image

from dragdiff.io import atomic_save_image, atomic_write_json
from dragdiff.model.data import to_uint8
from dragdiff.model.decoder import (
    VAE_WEIGHTS,
    compare_decoders,
    encoder_side_digest,
    eval_sources,
    format_table,
    load_vae,
    vae_dir,
)
from dragdiff.model.train import EVAL_SEED

ROOT = Path(__file__).resolve().parent.parent
SHIPPED_VAE = "src/dragdiff/assets/model/vae"
BEFORE_ISSUE_17 = "f1ed3a8"  # the last commit whose VAE is the session-1 one (3 min, L1 + gradient loss)


def vae_from_git(rev: str, folder: Path) -> Path:
    """Write the shipped VAE folder of git revision ``rev`` into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("config.json", VAE_WEIGHTS):
        blob = subprocess.run(
            ["git", "-C", str(ROOT), "show", f"{rev}:{SHIPPED_VAE}/{name}"], check=True, capture_output=True
        ).stdout
        (folder / name).write_bytes(blob)
    return folder


def resolve(spec: str, tmp: Path, name: str) -> Path:
    return vae_from_git(spec[4:], tmp / name) if spec.startswith("git:") else vae_dir(Path(spec))


@torch.no_grad()
def round_trip_sheet(vaes: dict, sets: dict, device: torch.device, n: int = 8) -> Image.Image:
    """Rows: source, then each VAE's round trip (posterior mean): first ``n`` held-out images per set."""
    rows = []
    for data in sets.values():
        x, _ = data.sample(
            n, generator=torch.Generator().manual_seed(EVAL_SEED), device=device
        )  # (n, 3, S, S)
        recs = [v.decode(v.encode(x).latent_dist.mode()).sample.clamp(-1, 1) for v in vaes.values()]
        rows += [torch.cat(list(t), dim=2) for t in (x, *recs)]  # each (3, S, n·S)
    grid = to_uint8(torch.cat(rows, dim=1)).permute(1, 2, 0).cpu().numpy()  # (rows·S, n·S, 3)
    return Image.fromarray(grid)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--before", default=f"git:{BEFORE_ISSUE_17}", help="VAE or pipeline folder, or git:REV")
    p.add_argument("--after", default=str(ROOT / SHIPPED_VAE), help="VAE or pipeline folder, or git:REV")
    p.add_argument("--n", type=int, default=256, help="held-out images per set")
    p.add_argument("--emoji-pack", type=Path, default=ROOT / ".carry" / "emoji_pack.npz")
    p.add_argument("--vgg", action="store_true", help="also LPIPS-VGG (slow on a CPU)")
    p.add_argument("--json", type=Path, default=None, help="write the numbers here")
    p.add_argument("--picture", type=Path, default=None, help="write a source | before | after sheet here")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    from dragdiff.bench.lpips import LPIPS

    device = torch.device(args.device)
    nets = {"alex": LPIPS().to(device)} | ({"vgg": LPIPS(net="vgg").to(device)} if args.vgg else {})
    pack = args.emoji_pack if args.emoji_pack.is_file() else None
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        folders = {
            name: resolve(spec, Path(tmp), name)
            for name, spec in (("before", args.before), ("after", args.after))
        }
        digests = {name: encoder_side_digest(f / VAE_WEIGHTS) for name, f in folders.items()}
        vaes = {name: load_vae(f, device) for name, f in folders.items()}
        results = compare_decoders(vaes, eval_sources(pack), device, n=args.n, lpips=nets)
        if args.picture is not None:
            atomic_save_image(round_trip_sheet(vaes, eval_sources(pack), device), args.picture)
    print(format_table(results))
    for set_name, per in results.items():
        ratio = per["before"]["speckle_share"] / max(per["after"]["speckle_share"], 1e-12)
        print(f"{set_name}: speckle share {ratio:.1f}× lower after")
    print(f"encoders bit-identical: {digests['before'] == digests['after']}; {time.monotonic() - t0:.0f} s")
    if args.json is not None:
        meta = {"before": args.before, "after": args.after, "n_per_set": args.n, "device": args.device}
        atomic_write_json(args.json, {**meta, "encoder_digests": digests, "results": results})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
