from exotrace.cli import main

main()
