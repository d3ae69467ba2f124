import sys

from nice.cli import main

sys.exit(main())
