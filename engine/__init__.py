"""The engine: pure PyTorch knowledge distillation (no database, no Celery, no HTTP)."""
