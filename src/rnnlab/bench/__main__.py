import sys

from rnnlab.bench import main

sys.exit(main())
