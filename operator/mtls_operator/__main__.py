from mtls_operator.main import main

raise SystemExit(main())
