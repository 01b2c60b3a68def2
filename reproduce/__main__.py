import sys

from reproduce.allocator import restart_under_jemalloc

restart_under_jemalloc()  # before torch is imported (reproduce/allocator.py)

from reproduce.cli import main  # noqa: E402

sys.exit(main())
