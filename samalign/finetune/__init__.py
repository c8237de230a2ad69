"""Fine-tuning: training-data builders and the peft LoRA trainer.

The builders render training examples with the same stage specs the agents use at inference
(train/serve parity); the trainer writes adapters that vLLM and the transformers backend load
unchanged. Training needs the ``local`` extra (torch, transformers, peft), imported lazily.
"""
