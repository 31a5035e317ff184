from payapi.cli.main import main

main()
