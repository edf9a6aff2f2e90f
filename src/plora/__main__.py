from plora.cli.main import main

main()
