"""Examples shown in the OpenAPI document (one per main object), kept apart from the handlers."""

FILE = {
    "id": "file-5f0c8e1d2a9b4c7e8f6a1b2c",
    "object": "file",
    "bytes": 140553,
    "created_at": 1795690000,
    "filename": "funds_qa.jsonl",
    "purpose": "fine-tune",
    "status": "processed",
    "status_details": None,
    "expires_at": None,
    "sha256": "9f2c3a0d4b7e1f6a8c5d2e9b0a7f4c1d3e6b8a2f5c9d0e7b4a1f8c3d6e2b9a05",
}

REPORT = {
    "object": "file.report",
    "file_id": FILE["id"],
    "status": "error",
    "format": "prompt_completion",
    "encoding": "utf-8",
    "counts": {
        "lines": 12,
        "examples": 12,
        "valid": 11,
        "invalid": 1,
        "duplicates": 0,
        "empty": 0,
        "kept": 11,
        "train": 11,
        "validation": 0,
        "test": 0,
    },
    "findings": [
        {
            "code": "not_json",
            "severity": "error",
            "line": 6,
            "field": None,
            "message": "line 6 is not valid JSON: Expecting ',' delimiter (column 31)",
        }
    ],
    "finding_totals": {"not_json": 1},
    "fixes": [],
    "tokens": {
        "encoding": "o200k_base",
        "total": 561,
        "min": 32,
        "mean": 51.0,
        "p95": 64,
        "max": 74,
        "billed_per_epoch": 561,
    },
    "estimate": {
        "n_epochs": 9,
        "candidates": [
            {
                "model": "gpt-4o-mini-2024-07-18",
                "trainable": True,
                "billed_tokens": 5049,
                "cost_usd": 0.0151,
                "over_limit_examples": 0,
            }
        ],
    },
}

JOB_CREATE = {
    "model": "gpt-4o-mini-2024-07-18",
    "training_file": FILE["id"],
    "suffix": "funds",
    "seed": 7,
    "metadata": {"team": "research"},
    "provider": "sandbox",
    "max_cost_usd": 5.0,
    "webhook": {"url": "https://hooks.example.com/tuneline", "events": ["fine_tuning.job.succeeded"]},
    "prepare": {"split": {"validation": 0.1, "seed": 3}},
    "integrations": [{"type": "wandb", "wandb": {"project": "funds-qa", "tags": ["research"]}}],
}

JOB = {
    "id": "ftjob-8c1d2e3f4a5b6c7d8e9f0a1b",
    "object": "fine_tuning.job",
    "created_at": 1795690100,
    "error": None,
    "fine_tuned_model": None,
    "finished_at": None,
    "hyperparameters": {"n_epochs": "auto", "batch_size": "auto", "learning_rate_multiplier": "auto"},
    "model": "gpt-4o-mini-2024-07-18",
    "organization_id": "acme",
    "result_files": [],
    "seed": 7,
    "status": "running",
    "trained_tokens": None,
    "training_file": FILE["id"],
    "validation_file": None,
    "integrations": [{"type": "wandb", "wandb": {"project": "funds-qa", "tags": ["research"]}}],
    "metadata": {"team": "research"},
    "method": None,
    "estimated_finish": 1795690400,
    "suffix": "funds",
    "stage": "training",
    "provider": "sandbox",
    "provider_status": "running",
    "provider_job_id": "ftjob-0d875f46df64004fcce04635",
    "webhook": {"url": "https://hooks.example.com/tuneline", "events": ["fine_tuning.job.succeeded"]},
    "max_cost_usd": 5.0,
    "estimate": {"n_epochs": 3, "billed_tokens": 335301, "price_per_million": 3.0, "cost_usd": 1.0059},
    "test_file": None,
    "prepare": {"split": {"validation": 0.1, "seed": 3}},
    "updated_at": 1795690160,
    "tenant": "acme",
}

EVENTS = {
    "object": "list",
    "has_more": True,
    "first_id": "ftevent-8c1d2e3f4a5b0000000012",
    "last_id": "ftevent-8c1d2e3f4a5b0000000011",
    "data": [
        {
            "id": "ftevent-8c1d2e3f4a5b0000000012",
            "object": "fine_tuning.job.event",
            "created_at": 1795690161,
            "level": "info",
            "message": "Step 4/10: training loss=0.95574",
            "type": "metrics",
            "data": {"step": 4, "train_loss": 0.95574, "train_mean_token_accuracy": 0.61},
        },
        {
            "id": "ftevent-8c1d2e3f4a5b0000000011",
            "object": "fine_tuning.job.event",
            "created_at": 1795690160,
            "level": "info",
            "message": "Checkpoint created at step 3",
            "type": "message",
            "data": {"step": 3, "checkpoint": "ftckpt-3b9a1c2d4e5f6a7b8c9d0e1f"},
        },
    ],
}

CHECKPOINTS = {
    "object": "list",
    "has_more": False,
    "first_id": "ftckpt-3b9a1c2d4e5f6a7b8c9d0e1f",
    "last_id": "ftckpt-3b9a1c2d4e5f6a7b8c9d0e1f",
    "data": [
        {
            "id": "ftckpt-3b9a1c2d4e5f6a7b8c9d0e1f",
            "object": "fine_tuning.job.checkpoint",
            "created_at": 1795690160,
            "fine_tuned_model_checkpoint": "ft:gpt-4o-mini-2024-07-18:sandbox:funds:ckpt-step-3",
            "fine_tuning_job_id": JOB["id"],
            "step_number": 3,
            "metrics": {"step": 3, "train_loss": 1.21279, "train_mean_token_accuracy": 0.55},
        }
    ],
}

METRICS = {
    "object": "list",
    "job_id": JOB["id"],
    "data": [
        {
            "step": 1,
            "train_loss": 2.04766,
            "train_mean_token_accuracy": 0.32,
            "valid_loss": 2.2,
            "valid_mean_token_accuracy": 0.3,
            "full_valid_loss": None,
            "full_valid_mean_token_accuracy": None,
        }
    ],
}

WEBHOOK_SECRET = {
    "object": "webhook.secret",
    "secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
    "created_at": 1795690000,
    "rotated_at": None,
    "previous_valid_until": None,
}

DELIVERY = {
    "id": "dlv-1a2b3c4d5e6f7a8b9c0d1e2f",
    "object": "webhook.delivery",
    "job_id": JOB["id"],
    "event_id": "evt_a7ad5239afdaea7331d1a577",
    "type": "fine_tuning.job.succeeded",
    "url": "https://hooks.example.com/tuneline",
    "created_at": 1795690400,
    "status": "delivered",
    "attempts": [
        {"at": 1795690400.2, "status_code": 500, "error": None, "latency_ms": 41, "outcome": "retry"},
        {"at": 1795690405.6, "status_code": 200, "error": None, "latency_ms": 38, "outcome": "delivered"},
    ],
    "next_attempt_at": None,
}

STATS = {
    "object": "stats",
    "tenant": None,
    "jobs": {
        "total": 42,
        "by_status": {
            "validating_files": 1,
            "queued": 2,
            "running": 3,
            "succeeded": 30,
            "failed": 4,
            "cancelled": 2,
        },
        "by_stage": {
            "preparing": 0,
            "uploading": 0,
            "submitting": 0,
            "provider_validating": 1,
            "provider_queued": 2,
            "train_queued": 0,
            "training": 3,
            "finalizing": 0,
            "evaluating": 0,
            "done": 36,
        },
        "by_provider": {"openai": 0, "azure": 0, "sandbox": 42, "local": 0},
    },
    "queues": {"datasets": 0, "provider": 1, "poll": 0, "webhooks": 0, "maintenance": 0},
    "oldest_active": {
        "provider_validating": {"id": JOB["id"], "created_at": 1795690100, "age_s": 61.5},
        "training": {"id": "ftjob-1f2e3d4c5b6a79880a1b2c3d", "created_at": 1795689000, "age_s": 1161.5},
    },
    "recent_failures": [
        {
            "id": "ftjob-9a8b7c6d5e4f30211a2b3c4d",
            "created_at": 1795680000,
            "finished_at": 1795680100,
            "provider": "sandbox",
            "error": {
                "code": "invalid_training_file",
                "message": "line 3: not JSON",
                "param": "training_file",
            },
        }
    ],
}

FINE_TUNED_MODEL = "ft:gpt-4o-mini-2024-07-18:acme:funds:ftjob-3f1c2a9b8d7e6f5a4b3c2d1e"

MODEL = {
    "id": FINE_TUNED_MODEL,
    "object": "model",
    "created": 1795690400,
    "owned_by": "acme",
    "base_model": "gpt-4o-mini-2024-07-18",
    "fine_tuning_job_id": "ftjob-3f1c2a9b8d7e6f5a4b3c2d1e",
    "provider": "sandbox",
}

MODEL_DELETED = {"id": FINE_TUNED_MODEL, "object": "model", "deleted": True}
MODEL_EXPORT = {
    "object": "model.export",
    "model": FINE_TUNED_MODEL,
    "format": "gguf",
    "quantization": "q8_0",
    "status": "building",
    "retry_after": 5,
}

CHAT_COMPLETION_CREATE = {
    "model": FINE_TUNED_MODEL,
    "messages": [{"role": "user", "content": "指数基金和主动基金有什么区别?"}],
    "max_tokens": 128,
    "temperature": 0,
}

CHAT_COMPLETION = {
    "id": "chatcmpl-7b6a5c4d3e2f1a0b9c8d7e6f",
    "object": "chat.completion",
    "created": 1795690500,
    "model": FINE_TUNED_MODEL,
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "指数基金跟踪指数,费用较低;主动基金由基金经理选股。"},
            "finish_reason": "stop",
        }
    ],
    "usage": {"prompt_tokens": 18, "completion_tokens": 24, "total_tokens": 42},
}

COMPLETION_CREATE = {"model": FINE_TUNED_MODEL, "prompt": "指数基金是", "max_tokens": 32}

COMPLETION = {
    "id": "cmpl-1a2b3c4d5e6f7a8b9c0d1e2f",
    "object": "text_completion",
    "created": 1795690500,
    "model": FINE_TUNED_MODEL,
    "choices": [{"index": 0, "text": "跟踪某一指数的基金。", "finish_reason": "stop", "logprobs": None}],
    "usage": {"prompt_tokens": 5, "completion_tokens": 10, "total_tokens": 15},
}

EVALUATION = {
    "object": "fine_tuning.job.evaluation",
    "job_id": "ftjob-3f1c2a9b8d7e6f5a4b3c2d1e",
    "model": FINE_TUNED_MODEL,
    "status": "completed",
    "examples": 17,
    "metrics": {
        "examples": 17,
        "answered": 17,
        "errors": 0,
        "exact_match": 0.0,
        "char_f1": 0.7094,
        "rouge_l": 0.7038,
        "bleu": 60.53,
    },
    "baseline": {
        "examples": 17,
        "answered": 17,
        "errors": 0,
        "exact_match": 0.0,
        "char_f1": 0.1631,
        "rouge_l": 0.1512,
        "bleu": 2.83,
    },
    "baseline_model": "smollm2-135m",
    "data": [
        {
            "id": "ex-0",
            "object": "fine_tuning.job.evaluation.example",
            "index": 0,
            "prompt": "债券基金适合什么样的投资者?",
            "reference": "债券基金波动较小,适合风险承受能力较低、追求稳健收益的投资者。",
            "answer": "债券基金波动较小,适合追求稳健收益的投资者。",
            "error": None,
            "exact_match": 0.0,
            "char_f1": 0.82,
            "rouge_l": 0.81,
            "bleu": 55.1,
        }
    ],
    "has_more": True,
    "first_id": "ex-0",
    "last_id": "ex-0",
}

IMPORT_CREATE = {"source": "openai", "since": "2025-01-01", "jobs": ["ftjob-abc123", "ftjob-def456"]}

IMPORT = {
    "id": "imp-5b0e3c7a9d1f2e4a6c8b0d2f",
    "object": "import",
    "source": "openai",
    "base_url": None,
    "since": 1735689600,
    "jobs": ["ftjob-abc123", "ftjob-def456"],
    "status": "succeeded",
    "progress": {
        "jobs_seen": 2,
        "jobs_imported": 1,
        "jobs_already_imported": 0,
        "jobs_skipped": 1,
        "files_imported": 2,
        "files_reused": 1,
    },
    "skipped": [
        {
            "job": "ftjob-def456",
            "code": "job_not_finished",
            "message": "the job is running at the provider; import again once it has ended",
        }
    ],
    "error": None,
    "created_at": 1764600000,
    "updated_at": 1764600042,
    "finished_at": 1764600042,
    "tenant": "acme",
    "retrain": None,
    "distill": None,
}

IMPORTS = {
    "object": "list",
    "data": [IMPORT],
    "has_more": False,
    "first_id": IMPORT["id"],
    "last_id": IMPORT["id"],
}

IMPORT_QUEUED = {
    **IMPORT,
    "status": "queued",
    "progress": dict.fromkeys(IMPORT["progress"], 0),
    "skipped": [],
    "updated_at": IMPORT["created_at"],
    "finished_at": None,
}

IMPORT_RETRAIN = {
    "candidates": [
        {"provider": "local", "model": "smollm2-135m", "hyperparameters": {"n_epochs": 2, "lora_rank": 16}}
    ],
    "split": {"test": 0.1, "seed": 42},
}

IMPORT_RETRAINED = {
    "object": "import.retrain",
    "import_id": IMPORT["id"],
    "data": [
        {
            "job_id": "ftjob-9c1d0e2f3a4b5c6d7e8f9a0b",
            "provider_job_id": "ftjob-abc123",
            "fine_tuned_model": "ft:gpt-4o-mini-2024-07-18:acme:support:AbC123xy",
            "test_set": "split",
            "experiment_id": "exp-0f1e2d3c4b5a69788796a5b4",
        }
    ],
    "skipped": [
        {
            "job_id": "ftjob-1a2b3c4d5e6f7a8b9c0d1e2f",
            "provider_job_id": "ftjob-ghi789",
            "code": "job_not_succeeded",
            "message": "the job failed at the provider: it made no model",
        }
    ],
}

IMPORT_DISTILL = {"max_cost_usd": 5.0}

IMPORT_DISTILLING = {
    "object": "import.distill",
    "import_id": IMPORT["id"],
    "status": "queued",
    "max_cost_usd": 5.0,
    "estimated_cost_usd": 0.4213,
    "spent_usd": 0.0,
    "jobs": [
        {
            "job_id": "ftjob-9c1d0e2f3a4b5c6d7e8f9a0b",
            "provider_job_id": "ftjob-abc123",
            "fine_tuned_model": "ft:gpt-4o-mini-2024-07-18:acme:support:AbC123xy",
            "prompts": 1200,
            "answered": 0,
            "errors": 0,
            "file_id": None,
            "complete": None,
        }
    ],
    "skipped": [],
    "error": None,
}
