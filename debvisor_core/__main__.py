from debvisor_core.cli import main

main()
