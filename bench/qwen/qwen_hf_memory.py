"""Transformers' side of bench/qwen/qwen-memory.bench.ts: peak RSS of forward + backward of
Qwen2_5_VLForConditionalGeneration on the same folder and rows as crpo's side, every weight trained.

Usage: python qwen_hf_memory.py <model folder> <inputs.json> <pixels.f32>
  inputs.json: input_ids / attention_mask (B, L), video_grid_thw (n, 3), second_per_grid_ts (n,),
  completion_start (the first completion position), repeats (video i belongs to repeats[i] rows);
  pixels.f32: the patch rows of the videos (fp32, little-endian), as the HF processor emits them.
Each video is given once per row (transformers encodes it for every row). The loss is the mean
next-token cross-entropy over the completion tokens (labels -100 elsewhere), then backward; the
call runs twice, gradients accumulating in .grad as two micro-batches would. Prints one JSON line:
{"loadMiB", "peakMiB", "weights", "torch", "transformers"} (ru_maxrss, MiB).
"""

import json
import resource
import sys

import numpy as np
import torch
import transformers
from transformers import Qwen2_5_VLForConditionalGeneration


def rss_peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def main() -> None:
    folder, inputs_file, pixels_file = sys.argv[1:4]
    torch.manual_seed(0)
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(folder, dtype=torch.float32, attn_implementation="eager")
    model.train()
    for p in model.parameters():
        p.requires_grad_(True)
    load_mib = rss_peak_mib()
    with open(inputs_file) as f:
        spec = json.load(f)
    ids = torch.tensor(spec["input_ids"], dtype=torch.long)
    mask = torch.tensor(spec["attention_mask"], dtype=torch.long)
    pixels = torch.from_numpy(np.fromfile(pixels_file, dtype="<f4")).view(-1, 3 * 2 * 14 * 14)
    grids, secs, reps = spec["video_grid_thw"], spec["second_per_grid_ts"], spec["repeats"]
    # one copy of each video per row that uses it
    rows, off, grid_rows, sec_rows = [], 0, [], []
    for g, s, r in zip(grids, secs, reps):
        n = g[0] * g[1] * g[2]
        for _ in range(r):
            rows.append(pixels[off : off + n])
            grid_rows.append(g)
            sec_rows.append(s)
        off += n
    labels = ids.clone()
    labels[:, : spec["completion_start"]] = -100
    batch = dict(
        input_ids=ids,
        attention_mask=mask,
        pixel_values_videos=torch.cat(rows, 0),
        video_grid_thw=torch.tensor(grid_rows, dtype=torch.long),
        second_per_grid_ts=torch.tensor(sec_rows, dtype=torch.float32),
        labels=labels,
    )
    for _ in range(2):
        out = model(**batch)
        out.loss.backward()
        del out
    print(
        json.dumps(
            {
                "loadMiB": load_mib,
                "peakMiB": rss_peak_mib(),
                "weights": sum(1 for _ in model.parameters()),
                "torch": torch.__version__,
                "transformers": transformers.__version__,
            }
        )
    )


if __name__ == "__main__":
    main()
