import sys
from pathlib import Path

# tests/he's tiny networks and recording backends are shared with these tests
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "he"))
