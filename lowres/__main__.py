from lowres.cli import main

main()
