from harper_certd.entry import main

raise SystemExit(main())
