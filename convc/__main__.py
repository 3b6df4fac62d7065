"""`python -m convc` is the `convc` command."""
import sys

from .cli import main

sys.exit(main())
