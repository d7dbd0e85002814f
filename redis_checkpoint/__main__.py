"""`python -m redis_checkpoint`: the `redis-checkpoint` command."""

from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
