"""Training throughput on a GPU with a realistic architecture: a Qwen2-0.5B-sized config with
random weights (hubs are unreachable), Tuneline's training child vs a plain ``trl`` script, same
run. Reports tokens/s, peak GPU memory and the ratio, naming the card.

    .venv/bin/python -m tests.bench.gpu_train_bench                 # on a machine with a CUDA GPU
    .venv/bin/python -m tests.bench.gpu_train_bench --smoke --device cpu   # a 2-layer check of the script

Needs the `train` extra with a CUDA build of torch on the GPU machine. The tokenizer is the demo
one (trained on the sample data); the model's embedding keeps Qwen2's 151,936 rows, so memory and
compute match the real 0.5B model. Examples are groups of 12 sample Q&A pairs (about 500 tokens).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

from tests.bench.common import machine
from tests.bench.train_bench import SAMPLE_DATA, Setup, compare, table

QWEN2_05B = {
    "vocab_size": 151936,
    "hidden_size": 896,
    "intermediate_size": 4864,
    "num_hidden_layers": 24,
    "num_attention_heads": 14,
    "num_key_value_heads": 2,
    "max_position_embeddings": 4096,
    "tie_word_embeddings": True,
}


def build_model(out: Path, layers: int | None) -> Path:
    """Demo tokenizer + a Qwen2-0.5B-sized model with random weights, saved in bf16."""
    import torch
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    from service.training.demo import build_demo

    build_demo(out / "tokenizer-source", SAMPLE_DATA / "funds_qa.jsonl")
    tokenizer = AutoTokenizer.from_pretrained(out / "tokenizer-source")
    sizes = dict(QWEN2_05B, num_hidden_layers=layers or QWEN2_05B["num_hidden_layers"])
    config = Qwen2Config(
        **sizes,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(config)
    model.to(torch.bfloat16).save_pretrained(out / "qwen2-0.5b-random")
    tokenizer.save_pretrained(out / "qwen2-0.5b-random")
    return out / "qwen2-0.5b-random"


def grouped_data(out: Path, group: int, count: int) -> Path:
    rows = [
        json.loads(line) for line in (SAMPLE_DATA / "funds_qa.jsonl").read_text(encoding="utf-8").splitlines()
    ]
    with out.open("w", encoding="utf-8") as handle:
        for start in range(0, min(len(rows), group * count), group):
            chunk = rows[start : start + group]
            prompt = (
                "\n".join(r["prompt"] + "\n" + r["completion"] for r in chunk[:-1])
                + "\n"
                + chunk[-1]["prompt"]
            )
            handle.write(
                json.dumps({"prompt": prompt, "completion": chunk[-1]["completion"]}, ensure_ascii=False)
            )
            handle.write("\n")
    return out


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--methods", default="lora,full")
    parser.add_argument(
        "--smoke", action="store_true", help="2 layers, 2 steps, 1 run: checks the script only"
    )
    parser.add_argument("--out", default="-", help="append the markdown section to this file ('-': stdout)")
    args = parser.parse_args()
    os.environ["HF_HUB_OFFLINE"] = "1"

    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        print("no CUDA device here; run on a GPU machine (or --smoke --device cpu)", file=sys.stderr)
        return 2
    card = torch.cuda.get_device_name(0) if args.device == "cuda" else "CPU"
    steps, runs = (2, 1) if args.smoke else (args.steps, args.runs)
    batch_size, group = (1, 2) if args.smoke else (args.batch_size, 12)
    with tempfile.TemporaryDirectory(prefix="tuneline-gpu-bench-") as tmp:
        work = Path(tmp)
        model = build_model(work, 2 if args.smoke else None)
        data = grouped_data(work / "grouped.jsonl", group, 400)
        threads = min(8, os.cpu_count() or 1)
        results = []
        for method in args.methods.split(","):
            lr = 2e-4 if method == "lora" else 2e-5
            size = "2 layers, smoke" if args.smoke else "24 layers"
            label = f"Qwen2-0.5B-sized ({size}), {method}, batch {batch_size}"
            setup = Setup(label, model, data, method, batch_size, steps, lr, threads, device=args.device)
            results.append(compare(setup, runs, work / method))
    section = "\n".join(
        [
            f"## Training throughput on {card} (issue 6)",
            "",
            f"Machine: {machine()}; device: {card}. Command: `python -m tests.bench.gpu_train_bench"
            + (" " + " ".join(sys.argv[1:]) if sys.argv[1:] else "")
            + "`.",
            "",
            *table(results, runs),
            "",
        ]
    )
    if args.out == "-":
        print(section)
    else:
        with open(args.out, "a", encoding="utf-8") as handle:
            handle.write("\n" + section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
