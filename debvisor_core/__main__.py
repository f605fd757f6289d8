from debvisor_core.entry import main

main()
