import sys

from labs.cohort.cli import main

sys.exit(main())
