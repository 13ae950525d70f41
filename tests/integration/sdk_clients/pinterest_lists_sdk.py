"""Update a customer list through `pinterest-api-sdk`, as an advertiser's server would.

Run as a child process (see `pinterest_sdk.py` for why): `python pinterest_lists_sdk.py <
request.json`, where the request names the token, ad account, list and the calls, each
`["add" | "remove", "<comma-separated records>"]`. With `"generated": true` the calls go
through the generated `CustomerListsApi.customer_lists_update` (one PATCH each); else
through the high-level `CustomerList` class (a GET, then a PATCH and a GET per call).
Prints one JSON line: what each call returned and the list's fields after them, or the
exception class, HTTP status and body.
"""

from __future__ import annotations

import json
import sys
from typing import Any


def main() -> int:
    request = json.load(sys.stdin)
    from openapi_generated.pinterest_client.api.customer_lists_api import CustomerListsApi
    from openapi_generated.pinterest_client.exceptions import ApiException
    from openapi_generated.pinterest_client.model.customer_list_update_request import (
        CustomerListUpdateRequest,
    )
    from pinterest.ads.customer_lists import CustomerList
    from pinterest.client import PinterestSDKClient

    client = PinterestSDKClient.create_client_with_token(request["token"])
    account, list_id = request["ad_account_id"], request["list_id"]
    results: list[Any] = []
    try:
        if request.get("generated"):
            api = CustomerListsApi(client)
            for operation, records in request["calls"]:
                answer = api.customer_lists_update(
                    ad_account_id=account,
                    customer_list_id=list_id,
                    customer_list_update_request=CustomerListUpdateRequest(
                        records=records,
                        operation_type=operation.upper(),
                    ),
                )
                results.append(answer.to_dict())
            fields: dict[str, Any] = {}
        else:
            customer_list = CustomerList(account, list_id, client=client)
            for operation, records in request["calls"]:
                if operation == "add":
                    results.append(customer_list.add_record(records))
                else:
                    results.append(customer_list.remove_record(records))
            fields = {
                "id": customer_list.id,
                "ad_account_id": customer_list.ad_account_id,
                "type": customer_list.type,
                "status": customer_list.status,
            }
    except ApiException as exc:
        body = exc.body.decode() if isinstance(exc.body, bytes) else exc.body
        print(json.dumps({"error": type(exc).__name__, "status": exc.status, "body": body}))
        return 0
    print(json.dumps({"results": results, "list": fields}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
