from .service.launcher import main

main()
