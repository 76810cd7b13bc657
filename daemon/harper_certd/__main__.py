from harper_certd.cli import main

raise SystemExit(main())
