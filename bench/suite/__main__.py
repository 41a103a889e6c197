"""`python -m bench.suite`: the same as `registry bench`."""

from bench.suite.run import main

if __name__ == "__main__":
    raise SystemExit(main())
