import sys

from kaito_core.cli import main

sys.exit(main())
