"""`python -m activelearn.report <sweep folder>`: see `activelearn.reporting`."""

from activelearn.reporting import main

if __name__ == "__main__":
    main()
