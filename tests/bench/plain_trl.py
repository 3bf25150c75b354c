"""The baseline of the training benchmark: the same training as a plain ``trl`` script, the way a
user would write it (``load_dataset`` + ``SFTTrainer`` + ``peft``), with no Tuneline code.

Prints one JSON line: {"tokens", "train_runtime_s", "tokens_per_s", "steps", "peak_gpu_memory_bytes"}.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", required=True, help="a local model directory")
    parser.add_argument("--data", required=True, help="prompt/completion JSONL")
    parser.add_argument("--method", choices=["lora", "full"], default="lora")
    parser.add_argument("--epochs", type=float, default=1)
    parser.add_argument("--max-steps", type=int, default=-1)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--learning-rate", type=float, default=2e-4)
    parser.add_argument("--lora-rank", type=int, default=16)
    parser.add_argument("--lora-alpha", type=int, default=32)
    parser.add_argument("--lora-dropout", type=float, default=0.05)
    parser.add_argument("--max-length", type=int, default=2048)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()

    import torch
    from datasets import load_dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    if args.threads:
        torch.set_num_threads(args.threads)
    bf16 = args.device == "cuda" and torch.cuda.is_bf16_supported()
    model = AutoModelForCausalLM.from_pretrained(args.model)
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    dataset = load_dataset("json", data_files=args.data, split="train")
    with tempfile.TemporaryDirectory() as out:
        config = SFTConfig(
            output_dir=out,
            per_device_train_batch_size=args.batch_size,
            num_train_epochs=args.epochs,
            max_steps=args.max_steps,
            learning_rate=args.learning_rate,
            lr_scheduler_type="linear",
            weight_decay=0.0,
            seed=args.seed,
            max_length=args.max_length,
            gradient_checkpointing=False,
            save_strategy="no",
            report_to="none",
            use_cpu=args.device == "cpu",
            bf16=bf16,
            fp16=args.device == "cuda" and not bf16,
            dataloader_num_workers=0,
            disable_tqdm=True,
        )
        peft_config = (
            LoraConfig(
                r=args.lora_rank,
                lora_alpha=args.lora_alpha,
                lora_dropout=args.lora_dropout,
                target_modules="all-linear",
                task_type="CAUSAL_LM",
            )
            if args.method == "lora"
            else None
        )
        trainer = SFTTrainer(
            model=model,
            args=config,
            train_dataset=dataset,
            processing_class=tokenizer,
            peft_config=peft_config,
        )
        started = time.monotonic()
        trainer.train()
        runtime = time.monotonic() - started
        trainer.save_model(os.path.join(out, "model"))
        per_epoch = sum(len(ids) for ids in trainer.train_dataset["input_ids"])
        tokens = int(per_epoch * (trainer.state.epoch or 0))
    peak = torch.cuda.max_memory_allocated() if args.device == "cuda" else None
    result = {
        "tokens": tokens,
        "train_runtime_s": round(runtime, 3),
        "tokens_per_s": tokens / runtime,
        "steps": trainer.state.global_step,
        "peak_gpu_memory_bytes": peak,
    }
    sys.stdout.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
