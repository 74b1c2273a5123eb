//! Files: safetensors checkpoints (timm key names), JSON, atomic writes.
