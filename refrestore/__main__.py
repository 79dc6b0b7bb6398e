from refrestore.cli import main

main()
