# SPDX-License-Identifier: Apache-2.0
# `python -m zerobit` runs the command-line tool.
import sys

from zerobit.cli import main

sys.exit(main())
