import sys

from worker.runtime.main import main

sys.exit(main())
