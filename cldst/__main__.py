from cldst.cli import main

main()
