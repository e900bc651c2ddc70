from fincart_chaos.cli import main

main()
